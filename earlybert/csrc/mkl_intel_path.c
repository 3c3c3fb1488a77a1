/* Loaded before torch (earlybert/mkl_dispatch.py), this library's definition of MKL's vendor check wins the
 * dynamic link: MKL then picks its kernels by the CPU's instruction sets (AVX2, AVX-512) alone, as it does on
 * Intel CPUs, instead of its generic path for other vendors. */
int mkl_serv_intel_cpu_true(void) { return 1; }
