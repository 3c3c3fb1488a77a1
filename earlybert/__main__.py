import sys

from earlybert.cli import main

sys.exit(main())
