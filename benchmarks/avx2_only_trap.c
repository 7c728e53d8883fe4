// kuamo benchmarks: hide AVX-512 and VNNI from patched libraries (benchmarks/avx2_only.py). Their cpuid and
// xgetbv instructions were overwritten with ud2; this SIGILL handler runs the real instruction, clears the
// feature bits, and steps over the patch. Any other SIGILL is re-raised as it would have been.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <cpuid.h>

#define MAXSITES 512
static unsigned long site_off[MAXSITES];
static int site_kind[MAXSITES];  // 1 cpuid, 2 xgetbv
static char site_lib[MAXSITES][64];
static int nsites;
static unsigned long hits[3];

static void mask(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c, unsigned *d) {
  if (leaf == 7 && sub == 0) {
    *b &= ~((1u<<16)|(1u<<17)|(1u<<21)|(1u<<26)|(1u<<27)|(1u<<28)|(1u<<30)|(1u<<31));  // AVX512 F DQ IFMA PF ER CD BW VL
    *c &= ~((1u<<1)|(1u<<6)|(1u<<11)|(1u<<12)|(1u<<14));  // VBMI VBMI2 VNNI BITALG VPOPCNTDQ
    *d &= ~((1u<<2)|(1u<<3)|(1u<<8)|(1u<<22)|(1u<<23)|(1u<<24)|(1u<<25));  // 4VNNIW 4FMAPS VP2INTERSECT AMX-BF16 FP16 AMX-TILE AMX-INT8
  } else if (leaf == 7 && sub == 1) {
    *a &= ~((1u<<4)|(1u<<5)|(1u<<23));  // AVX-VNNI AVX512-BF16 AVX-IFMA
    *d &= ~((1u<<4)|(1u<<5)|(1u<<10));  // AVX-VNNI-INT8 AVX-NE-CONVERT AVX-VNNI-INT16
  }
}

static void on_sigill(int sig, siginfo_t *si, void *uc_) {
  ucontext_t *uc = uc_;
  greg_t *g = uc->uc_mcontext.gregs;
  unsigned long rip = (unsigned long)g[REG_RIP];
  Dl_info info;
  if (dladdr((void *)rip, &info) && info.dli_fname) {
    unsigned long off = rip - (unsigned long)info.dli_fbase;
    for (int i = 0; i < nsites; i++) {
      if (site_off[i] != off || !strstr(info.dli_fname, site_lib[i])) continue;
      if (site_kind[i] == 1) {
        unsigned a, b, c, d, leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX];
        __cpuid_count(leaf, sub, a, b, c, d);
        mask(leaf, sub, &a, &b, &c, &d);
        g[REG_RAX] = a; g[REG_RBX] = b; g[REG_RCX] = c; g[REG_RDX] = d;
        g[REG_RIP] = rip + 2;
      } else {
        unsigned lo, hi, xcr = (unsigned)g[REG_RCX];
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(xcr));
        if (xcr == 0) lo &= ~0xE0u;  // no opmask / ZMM state: AVX-512 unusable
        g[REG_RAX] = lo; g[REG_RDX] = hi;
        g[REG_RIP] = rip + 3;
      }
      hits[site_kind[i]]++;
      return;
    }
  }
  signal(SIGILL, SIG_DFL);  // a real illegal instruction: crash as it would have
}

static void report(void) {
  if (getenv("KUAMO_AVX2_ONLY_VERBOSE")) fprintf(stderr, "cpuid_trap: %lu cpuid, %lu xgetbv emulated\n", hits[1], hits[2]);
}

__attribute__((constructor)) static void init(void) {
  const char *path = getenv("KUAMO_AVX2_ONLY_SITES");
  if (!path) return;
  FILE *f = fopen(path, "r");
  if (!f) { perror(path); return; }
  char lib[64], kind[16]; unsigned long off;
  while (nsites < MAXSITES && fscanf(f, "%63s %lx %15s", lib, &off, kind) == 3) {
    strcpy(site_lib[nsites], lib); site_off[nsites] = off; site_kind[nsites] = strcmp(kind, "cpuid") ? 2 : 1; nsites++;
  }
  fclose(f);
  struct sigaction sa; memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigill; sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGILL, &sa, NULL);
  atexit(report);
}
