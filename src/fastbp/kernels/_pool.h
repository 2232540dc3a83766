/* fastbp's thread pool: N blocks of work, taken one at a time from a shared counter.
 *
 * Why not OpenMP: a parallel region ends at a barrier every thread of the team must
 * reach, so a helper the scheduler does not run (another process holds its core) stalls
 * the caller for a scheduler slice, and libgomp's long spin makes each helper cost a
 * core between regions. Here:
 *
 * - the calling thread starts on the blocks at once; helpers join when they run. Blocks
 *   are claimed from one atomic ticket, so a thread that runs takes the blocks of one
 *   that does not; the caller waits only for blocks a helper has already started;
 * - helpers spin for a short time (FASTBP_POOL_SPIN_NS by default) after their last
 *   block, yielding the core to any other runnable thread every few iterations, then
 *   sleep on a condition variable: a product a few microseconds after the last finds
 *   them awake, a spinning helper does not hold a core another thread needs, and an
 *   idle pool costs no CPU;
 * - one caller at a time owns the pool; a second thread that calls meanwhile runs its
 *   blocks itself (never waits for the pool);
 * - the child of a fork starts with no helpers and a free pool (pthread_atfork), and
 *   starts helpers again when it needs them: nothing the parent's threads held is
 *   waited for.
 *
 * Which thread runs a block never changes what the block computes: callers cut their
 * work into blocks that depend on the sizes alone.
 *
 * The ticket packs (generation << 32) | (blocks << 16) | next block, so a claim is one
 * compare-and-swap that fails for a finished or newer job: at most 65,535 blocks per job.
 */
#ifndef FASTBP_POOL_H
#define FASTBP_POOL_H

#include <stdint.h>

/* fn(ctx, block, worker): worker is 0 for the calling thread, 1.. for helpers, always
 * below the job's thread count (an index for per-thread scratch). */
typedef void (*fastbp_block_fn)(void *ctx, intptr_t block, int worker);

#define FASTBP_POOL_MAX_BLOCKS 0xFFFF
#define FASTBP_POOL_MAX_THREADS 64
#define FASTBP_POOL_SPIN_NS 50000

#if defined(_WIN32) || !(defined(__GNUC__) || defined(__clang__))
/* No pthreads (or no GCC atomics): every job runs on the calling thread. */
#define FASTBP_HAVE_POOL 0
static int fastbp_pool_threads = 1;
static long long fastbp_pool_spin_ns = 0;
static int fastbp_pool_helpers(void) { return 0; }
static int fastbp_pool_init(void) { return 0; }
static int fastbp_run_blocks(fastbp_block_fn fn, void *ctx, intptr_t count, int threads)
{
    intptr_t i;
    (void)threads;
    for (i = 0; i < count; i++) fn(ctx, i, 0);
    return 1;
}
#else
#define FASTBP_HAVE_POOL 1
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

static int fastbp_pool_threads = 1;                     /* fastbp.set_num_threads */
static long long fastbp_pool_spin_ns = FASTBP_POOL_SPIN_NS;

static struct {
    uint64_t ticket;       /* (generation << 32) | (blocks << 16) | next block */
    fastbp_block_fn fn;    /* the job of the current generation */
    void *ctx;
    int wanted;            /* helpers with an id below this take part */
    int64_t done;          /* blocks of the current generation finished */
    int busy;              /* a caller owns the pool */
    int helpers;           /* helper threads started */
    int sleepers;          /* helpers waiting on `wake` */
    int waiting;           /* the caller waits on `finished` */
    pthread_mutex_t lock;
    pthread_cond_t wake, finished;
} fastbp_pool;

#define FASTBP_LD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define FASTBP_ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)

static inline void fastbp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline long long fastbp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Claim and run blocks of the current job while there are any; `id` < 0: the caller. */
static void fastbp_pool_work(int id)
{
    for (;;) {
        uint64_t t = FASTBP_LD(fastbp_pool.ticket);
        uint64_t next = t & 0xFFFF, count = (t >> 16) & 0xFFFF;
        fastbp_block_fn fn;
        void *ctx;
        if (next >= count || (id >= 0 && id >= FASTBP_LD(fastbp_pool.wanted)))
            return;
        /* read before the claim; a newer job's fields make the claim below fail */
        fn = __atomic_load_n(&fastbp_pool.fn, __ATOMIC_RELAXED);
        ctx = __atomic_load_n(&fastbp_pool.ctx, __ATOMIC_RELAXED);
        if (!__atomic_compare_exchange_n(&fastbp_pool.ticket, &t, t + 1, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            continue;
        fn(ctx, (intptr_t)next, id + 1);
        if (__atomic_add_fetch(&fastbp_pool.done, 1, __ATOMIC_SEQ_CST) == (int64_t)count
                && FASTBP_LD(fastbp_pool.waiting)) {
            pthread_mutex_lock(&fastbp_pool.lock);
            pthread_cond_signal(&fastbp_pool.finished);
            pthread_mutex_unlock(&fastbp_pool.lock);
        }
    }
}

static int fastbp_pool_has_work(int id)
{
    uint64_t t = FASTBP_LD(fastbp_pool.ticket);
    return (t & 0xFFFF) < ((t >> 16) & 0xFFFF) && id < FASTBP_LD(fastbp_pool.wanted);
}

static void *fastbp_helper_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    long long idle_since = fastbp_now_ns();
    unsigned spins = 0;
    for (;;) {
        if (fastbp_pool_has_work(id)) {
            fastbp_pool_work(id);
            idle_since = fastbp_now_ns();
            continue;
        }
        if (++spins % 64 != 0) {
            fastbp_cpu_relax();
            continue;
        }
        if (fastbp_now_ns() - idle_since < FASTBP_LD(fastbp_pool_spin_ns)) {
            sched_yield();  /* a thread that has work on this core runs first */
            continue;
        }
        pthread_mutex_lock(&fastbp_pool.lock);
        __atomic_add_fetch(&fastbp_pool.sleepers, 1, __ATOMIC_SEQ_CST);
        while (!fastbp_pool_has_work(id))
            pthread_cond_wait(&fastbp_pool.wake, &fastbp_pool.lock);
        __atomic_sub_fetch(&fastbp_pool.sleepers, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&fastbp_pool.lock);
        idle_since = fastbp_now_ns();
    }
    return NULL;
}

static void fastbp_pool_reset(void)
{
    /* The child of a fork: the parent's helpers do not exist here, and the lock may
     * have been held by one of them. Keep the generation (stale claims stay stale). */
    uint64_t gen = fastbp_pool.ticket >> 32;
    memset(&fastbp_pool, 0, sizeof fastbp_pool);
    fastbp_pool.ticket = (gen + 1) << 32;
    pthread_mutex_init(&fastbp_pool.lock, NULL);
    pthread_cond_init(&fastbp_pool.wake, NULL);
    pthread_cond_init(&fastbp_pool.finished, NULL);
}

static int fastbp_pool_init(void)
{
    fastbp_pool_reset();
    return pthread_atfork(NULL, NULL, fastbp_pool_reset);
}

static int fastbp_pool_helpers(void) { return FASTBP_LD(fastbp_pool.helpers); }

/* Start helpers up to `n` (the caller owns the pool); returns how many there are. */
static int fastbp_pool_grow(int n)
{
    pthread_attr_t attr;
    if (n > FASTBP_POOL_MAX_THREADS - 1) n = FASTBP_POOL_MAX_THREADS - 1;
    if (fastbp_pool.helpers >= n) return fastbp_pool.helpers;
    if (pthread_attr_init(&attr) != 0) return fastbp_pool.helpers;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (fastbp_pool.helpers < n) {
        pthread_t th;
        if (pthread_create(&th, &attr, fastbp_helper_main,
                           (void *)(intptr_t)fastbp_pool.helpers) != 0)
            break;
        FASTBP_ST(fastbp_pool.helpers, fastbp_pool.helpers + 1);
    }
    pthread_attr_destroy(&attr);
    return fastbp_pool.helpers;
}

/* Run fn(ctx, i) once for each i in [0, count), on the calling thread and up to
 * `threads` - 1 helpers (threads <= 0: fastbp's setting). Returns the most threads that
 * could take part (1: the caller ran everything). */
static int fastbp_run_blocks(fastbp_block_fn fn, void *ctx, intptr_t count, int threads)
{
    intptr_t i;
    int helpers;
    uint64_t gen;
    long long start;
    unsigned spins = 0;
    if (threads <= 0) threads = FASTBP_LD(fastbp_pool_threads);
    if (threads > count) threads = (int)count;
    if (threads <= 1 || count > FASTBP_POOL_MAX_BLOCKS
            || __atomic_exchange_n(&fastbp_pool.busy, 1, __ATOMIC_ACQUIRE)) {
        for (i = 0; i < count; i++) fn(ctx, i, 0);
        return 1;
    }
    helpers = fastbp_pool_grow(threads - 1);
    if (helpers > threads - 1) helpers = threads - 1;
    __atomic_store_n(&fastbp_pool.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&fastbp_pool.ctx, ctx, __ATOMIC_RELAXED);
    FASTBP_ST(fastbp_pool.wanted, helpers);
    FASTBP_ST(fastbp_pool.done, 0);
    gen = (FASTBP_LD(fastbp_pool.ticket) >> 32) + 1;
    FASTBP_ST(fastbp_pool.ticket, (gen << 32) | ((uint64_t)count << 16));
    if (FASTBP_LD(fastbp_pool.sleepers) > 0) {
        pthread_mutex_lock(&fastbp_pool.lock);
        pthread_cond_broadcast(&fastbp_pool.wake);
        pthread_mutex_unlock(&fastbp_pool.lock);
    }
    fastbp_pool_work(-1);
    /* Blocks a helper started: spin a little, then sleep until the last one ends. */
    start = fastbp_now_ns();
    while (FASTBP_LD(fastbp_pool.done) != (int64_t)count) {
        if (++spins % 64 == 0 && fastbp_now_ns() - start > FASTBP_LD(fastbp_pool_spin_ns)) {
            /* the helper is not running (or its block is long): sleep until it ends */
            pthread_mutex_lock(&fastbp_pool.lock);
            FASTBP_ST(fastbp_pool.waiting, 1);
            while (FASTBP_LD(fastbp_pool.done) != (int64_t)count)
                pthread_cond_wait(&fastbp_pool.finished, &fastbp_pool.lock);
            FASTBP_ST(fastbp_pool.waiting, 0);
            pthread_mutex_unlock(&fastbp_pool.lock);
            break;
        }
        fastbp_cpu_relax();
    }
    __atomic_store_n(&fastbp_pool.busy, 0, __ATOMIC_RELEASE);
    return helpers + 1;
}
#endif
#endif
