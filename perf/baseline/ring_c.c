// C reference for the shm-protocol ring benchmark: the same shape as
// shm-protocol/benches/ring.rs (two SPSC rings of 1024 x 64-byte entries, head and tail on
// their own 128-byte lines, cached peer positions, batched publish, an echo thread that copies
// each request into the response ring; threads pinned to cores 0 and 1, both busy-polling).
// Built and run by perf/ring.js so both numbers come from the same run on the same machine.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAP 1024u
#define ENTRY 64
typedef struct {
  _Alignas(128) _Atomic uint64_t tail;
  _Alignas(128) _Atomic uint64_t head;
  _Alignas(128) uint8_t entries[CAP][ENTRY];
} ring_t;
typedef struct { ring_t *r; uint64_t pos, cached, published; } half_t;

static int try_push(half_t *p, const uint8_t *e) {
  if (p->pos - p->cached == CAP) {
    p->cached = atomic_load_explicit(&p->r->head, memory_order_acquire);
    if (p->pos - p->cached == CAP) return 0;
  }
  memcpy(p->r->entries[p->pos & (CAP - 1)], e, ENTRY);
  p->pos++;
  return 1;
}
static void publish(half_t *p) {
  if (p->pos != p->published) { atomic_store_explicit(&p->r->tail, p->pos, memory_order_release); p->published = p->pos; }
}
static int try_pop(half_t *c, uint8_t *out) {
  if (c->cached == c->pos) {
    c->cached = atomic_load_explicit(&c->r->tail, memory_order_acquire);
    if (c->cached == c->pos) return 0;
  }
  memcpy(out, c->r->entries[c->pos & (CAP - 1)], ENTRY);
  c->pos++;
  return 1;
}
static void release_(half_t *c) {
  if (c->pos != c->published) { atomic_store_explicit(&c->r->head, c->pos, memory_order_release); c->published = c->pos; }
}

static void pin(int core) {
  cpu_set_t s; CPU_ZERO(&s); CPU_SET(core, &s);
  pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef struct { ring_t *req, *resp; _Atomic int stop; } server_t;
static void *server(void *arg) {
  server_t *s = arg; pin(1);
  half_t in = {s->req, 0, 0, 0}, out = {s->resp, 0, 0, 0};
  uint8_t e[ENTRY]; int pending = 0;
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
    int moved = 0;
    for (;;) {
      if (!pending && !try_pop(&in, e)) break;
      if (!try_push(&out, e)) { pending = 1; break; }
      pending = 0; moved = 1;
    }
    if (moved) { release_(&in); publish(&out); } else __builtin_ia32_pause();
  }
  return NULL;
}
static ring_t *new_ring(void) { ring_t *r = aligned_alloc(4096, (sizeof(ring_t) + 4095) & ~4095ul); memset(r, 0, sizeof *r); return r; }
static int cmp(const void *a, const void *b) { uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b; return x < y ? -1 : x > y; }

static void start(server_t *s, pthread_t *t) { s->req = new_ring(); s->resp = new_ring(); s->stop = 0; pthread_create(t, NULL, server, s); }
static void stop(server_t *s, pthread_t t) { s->stop = 1; pthread_join(t, NULL); free(s->req); free(s->resp); }

int main(int argc, char **argv) {
  size_t samples = argc > 1 ? strtoul(argv[1], 0, 10) : 200000;
  pin(0);
  server_t s; pthread_t t; start(&s, &t);
  half_t req = {s.req, 0, 0, 0}, resp = {s.resp, 0, 0, 0};
  uint8_t e[ENTRY] = {0}, r[ENTRY];
  uint64_t *lat = malloc(samples * sizeof *lat); size_t warm = samples / 10;
  for (size_t i = 0; i < samples + warm; i++) {
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    e[0] = (uint8_t)i; try_push(&req, e); publish(&req);
    while (!try_pop(&resp, r)) __builtin_ia32_pause();
    release_(&resp);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (i >= warm) lat[i - warm] = (b.tv_sec - a.tv_sec) * 1000000000ull + (b.tv_nsec - a.tv_nsec);
  }
  stop(&s, t);
  qsort(lat, samples, sizeof *lat, cmp);
  uint64_t p50 = lat[(size_t)((samples - 1) * 0.5 + 0.5)], p99 = lat[(size_t)((samples - 1) * 0.99 + 0.5)];
  double mrps[3]; unsigned batches[3] = {1, 16, 256};
  for (int k = 0; k < 3; k++) {
    unsigned batch = batches[k]; start(&s, &t);
    half_t rq = {s.req, 0, 0, 0}, rs = {s.resp, 0, 0, 0};
    uint64_t sent = 0, done = 0, window = batch * 4 < CAP ? batch * 4 : CAP, d0 = 0; double t0 = now(), m0 = 0;
    for (;;) {
      while (sent - done + batch <= window) { for (unsigned j = 0; j < batch; j++) try_push(&rq, e); publish(&rq); sent += batch; }
      while (try_pop(&rs, r)) done++;
      release_(&rs);
      double el = now() - t0;
      if (!m0 && el > 0.3) { m0 = el; d0 = done; }
      if (el > 1.5) { mrps[k] = (done - d0) / (el - m0) / 1e6; break; }
    }
    stop(&s, t);
  }
  printf("c ring (2 threads pinned to cores 0/1, busy-polling)\n  round trip p50 %lu ns, p99 %lu ns (%zu samples)\n", p50, p99, samples);
  for (int k = 0; k < 3; k++) printf("  batch %3u: %8.1f M req/s\n", batches[k], mrps[k]);
  printf("{\"rtt_p50_ns\":%lu,\"rtt_p99_ns\":%lu,\"mrps_batch1\":%.2f,\"mrps_batch16\":%.2f,\"mrps_batch256\":%.2f}\n", p50, p99, mrps[0], mrps[1], mrps[2]);
  return 0;
}
