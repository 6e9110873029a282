/* Holds the coverage tables of the instrumented HTTP/2 engine until libFuzzer is loaded.
 *
 * clang's -fsanitize-coverage=inline-8bit-counters,pc-table makes each module call
 * __sanitizer_cov_8bit_counters_init and __sanitizer_cov_pcs_init from a constructor,
 * when it is loaded. Atheris loads its libFuzzer (core_with_libfuzzer) only inside
 * atheris.Fuzz(), and with RTLD_LOCAL, so the engine, imported before, would find no
 * such symbols. This shim, loaded RTLD_GLOBAL first, defines them: a call is passed to
 * libFuzzer's own definition once that library is loaded (looked up in its handle, so
 * the shim never shadows atheris's own registrations), and recorded until then;
 * meshd_fuzz_flush() hands the recorded tables over from the first fuzz input. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

#define MAX_MODULES 8

typedef void (*counters_fn)(uint8_t *, uint8_t *);
typedef void (*pcs_fn)(const uintptr_t *, const uintptr_t *);

static char core_path[4096];
static uint8_t *counters[MAX_MODULES][2];
static const uintptr_t *pcs[MAX_MODULES][2];
static int n_counters, n_pcs;

static void *core(const char *name) {
  void *h;
  if (!core_path[0]) return NULL;
  h = dlopen(core_path, RTLD_NOW | RTLD_NOLOAD);
  return h ? dlsym(h, name) : NULL;
}

void meshd_fuzz_core(const char *path) { snprintf(core_path, sizeof core_path, "%s", path); }

void __sanitizer_cov_8bit_counters_init(uint8_t *start, uint8_t *stop) {
  counters_fn real = (counters_fn)core("__sanitizer_cov_8bit_counters_init");
  if (real) real(start, stop);
  else if (n_counters < MAX_MODULES) { counters[n_counters][0] = start; counters[n_counters++][1] = stop; }
}

void __sanitizer_cov_pcs_init(const uintptr_t *start, const uintptr_t *stop) {
  pcs_fn real = (pcs_fn)core("__sanitizer_cov_pcs_init");
  if (real) real(start, stop);
  else if (n_pcs < MAX_MODULES) { pcs[n_pcs][0] = start; pcs[n_pcs++][1] = stop; }
}

/* Returns how many modules were handed over, or -1 while libFuzzer is not loaded yet. */
int meshd_fuzz_flush(void) {
  counters_fn c = (counters_fn)core("__sanitizer_cov_8bit_counters_init");
  pcs_fn p = (pcs_fn)core("__sanitizer_cov_pcs_init");
  int i, n = n_counters;
  if (!c || !p) return -1;
  /* libFuzzer pairs each module's PC table with its counters by order: counters first. */
  for (i = 0; i < n_counters; i++) c(counters[i][0], counters[i][1]);
  for (i = 0; i < n_pcs; i++) p(pcs[i][0], pcs[i][1]);
  n_counters = n_pcs = 0;
  return n;
}
