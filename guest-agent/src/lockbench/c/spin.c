/* The reference the Rust test-and-set benchmark is held to (issue 6: single-thread spinlock
 * throughput within 10% of a plain C loop doing the same atomic exchange + increment).
 * Same layout as the Rust `Apart<Tas>`: the lock and the data on separate 128-byte lines. */
#include <stdint.h>

static struct { _Alignas(128) uint32_t word; } lock;
static struct { _Alignas(128) volatile uint64_t value; } data;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* Acquire, increment, release, `iters` times; returns the counter so nothing is optimised away. */
uint64_t mmx_spin_c(uint64_t iters) {
	for (uint64_t i = 0; i < iters; i++) {
		while (__atomic_exchange_n(&lock.word, 1, __ATOMIC_ACQUIRE)) {
			while (__atomic_load_n(&lock.word, __ATOMIC_RELAXED))
				cpu_relax();
		}
		data.value = data.value + 1;
		__atomic_store_n(&lock.word, 0, __ATOMIC_RELEASE);
	}
	return data.value;
}
