"""A standard Hugging Face Trainer text-classification script, with EarlyBERT: the only change from a plain
`run_glue.py`-style script is `EarlyBertTrainer(..., search=SearchConfig(...))` in place of `Trainer(...)`.

    python finetune/hf_trainer_glue.py --model_name_or_path DIR --data_dir ../shared/data/bbc-topic \
        --output_dir runs/hf-bbc --num_train_epochs 2 --per_device_train_batch_size 32 --learning_rate 1e-4 \
        --heads_ratio 0.5 --ffn_ratio 0.6
    deepspeed --num_gpus 8 finetune/hf_trainer_glue.py ... --deepspeed configs/deepspeed/zero1_bf16.json

Data: a folder with train.tsv and dev.tsv (columns sentence, label), as GLUE's single-sentence tasks.
"""

import csv
from dataclasses import dataclass, field

import numpy as np
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser, TrainingArguments

import earlybert  # noqa: F401  (registers the slim classes with the Auto classes)
from earlybert.integrations.hf import EarlyBertTrainer
from earlybert.ticket.search import SearchConfig


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(metadata={"help": "pretrained BERT/RoBERTa folder or Hub name"})
    data_dir: str = field(metadata={"help": "folder with train.tsv and dev.tsv (sentence, label)"})
    max_seq_length: int = field(default=64, metadata={"help": "tokens per example"})


def main() -> None:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments, SearchConfig))
    script, training, search = parser.parse_args_into_dataclasses()
    files = {"train": f"{script.data_dir}/train.tsv", "validation": f"{script.data_dir}/dev.tsv"}
    raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE)
    num_labels = len(set(raw["train"]["label"]))
    tokenizer = AutoTokenizer.from_pretrained(script.model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(script.model_name_or_path, num_labels=num_labels)

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=script.max_seq_length, padding="max_length")

    data = raw.map(tokenize, batched=True, remove_columns=["sentence"])

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = EarlyBertTrainer(model=model, args=training, train_dataset=data["train"],
                               eval_dataset=data["validation"], processing_class=tokenizer,
                               compute_metrics=accuracy, search=search)
    trainer.train()                      # search, ticket.json, shrink, slim training
    metrics = trainer.evaluate()         # on the slim model
    trainer.save_model()                 # loads with AutoModelForSequenceClassification after `import earlybert`
    trainer.save_metrics("eval", metrics)
    print(metrics)


if __name__ == "__main__":
    main()
