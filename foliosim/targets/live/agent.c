/*
 * foliosim live agent: one scenario process on the live kernel.
 *
 * The controller drives it over an AF_UNIX SOCK_SEQPACKET connection with fixed 64-byte
 * messages (struct msg) and gets a 64-byte reply (struct reply) per operation. Every operation
 * is one raw system call (or one loop of stores/loads for write/read), timed with
 * CLOCK_MONOTONIC immediately around it. A forked child closes its parent's connection,
 * connects anew and says hello with its pid, then serves commands like any agent.
 *
 * The agent keeps its own memory small and static: no malloc, a small stack, no mappings
 * besides the scenario's regions and their guard reservations. It starts with the controller's
 * PR_SET_THP_DISABLE inherited, applies MADV_NOHUGEPAGE to its own mappings (never to regions,
 * which do not exist yet), faults its stack, and then clears PR_SET_THP_DISABLE before it
 * connects: `enabled: always` cannot give the runner's memory a THP, and no scenario operation
 * (nor a forked child) ever runs with THPs disabled for the process.
 *
 * Modes:
 *   agent <abstract socket name> <cpu> <cgroup.procs path or -> <RLIMIT_DATA bytes or 0>
 *   helper    fault one fully written PMD THP (MADV_HUGEPAGE, 2 MiB aligned), say "ready",
 *             sleep until killed (keeps an mm registered with khugepaged while it is parked)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

#define PMD_SIZE (2UL << 20)
#define PAGE 4096UL
#define MAX_PINS 1024

enum {
	OP_HELLO = 1,
	OP_MMAP = 2,       /* a0 size, a1 prot, a2 misalign, a3 1 = reserve; extra = address */
	OP_MUNMAP = 3,     /* a0 addr, a1 len */
	OP_MPROTECT = 4,   /* a0 addr, a1 len, a2 prot */
	OP_MADVISE = 5,    /* a0 addr, a1 len, a2 advice */
	OP_MLOCK = 6,      /* a0 addr, a1 len, a2 onfault */
	OP_MUNLOCK = 7,    /* a0 addr, a1 len */
	OP_MLOCKALL = 8,   /* a0 flags */
	OP_MUNLOCKALL = 9,
	OP_MREMAP = 10,    /* a0 old, a1 old len, a2 new len, a3 new addr */
	OP_WRITE = 11,     /* a0 addr, a1 len, a2 value */
	OP_READ = 12,      /* a0 addr, a1 len */
	OP_FORK = 13,      /* extra = child pid */
	OP_EXIT = 14,
	OP_PIN = 15,       /* a0 slot, a1 addr, a2 len */
	OP_UNPIN = 16,     /* a0 slot */
};

struct msg {
	uint64_t op;
	uint64_t a[7];
};

struct reply {
	int64_t result;
	int64_t err;
	uint64_t ns;
	uint64_t extra;
	uint64_t pad[4];
};

static int ctrl = -1;
static struct sockaddr_un sa;
static socklen_t salen;
static int rings[MAX_PINS];
static char mapsbuf[65536];

static uint64_t now_ns(void)
{
	struct timespec ts;

	syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void finish(struct reply *r, long rc, int err, uint64_t t0, uint64_t t1)
{
	r->result = rc < 0 ? -1 : 0;
	r->err = rc < 0 ? err : 0;
	r->ns = t1 - t0;
}

static int connect_ctrl(void)
{
	int fd = (int)syscall(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (syscall(SYS_connect, fd, (struct sockaddr *)&sa, salen) < 0) {
		syscall(SYS_close, fd);
		return -1;
	}
	return fd;
}

static int say_hello(void)
{
	struct msg m;

	memset(&m, 0, sizeof(m));
	m.op = OP_HELLO;
	m.a[0] = (uint64_t)syscall(SYS_getpid);
	return send(ctrl, &m, sizeof(m), MSG_NOSIGNAL) == (ssize_t)sizeof(m) ? 0 : -1;
}

/* MADV_NOHUGEPAGE on every mapping the agent has at start (text, data, bss, heap, stack). */
static void nohugepage_self(void)
{
	int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
	ssize_t n, len = 0;
	char *p;

	if (fd < 0)
		return;
	while (len < (ssize_t)sizeof(mapsbuf) - 1 &&
	       (n = read(fd, mapsbuf + len, sizeof(mapsbuf) - 1 - len)) > 0)
		len += n;
	syscall(SYS_close, fd);
	mapsbuf[len] = 0;
	for (p = mapsbuf; *p;) {
		unsigned long start = 0, end = 0;

		while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
			start = start * 16 + (unsigned long)(*p <= '9' ? *p - '0' : *p - 'a' + 10), p++;
		if (*p == '-')
			p++;
		while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
			end = end * 16 + (unsigned long)(*p <= '9' ? *p - '0' : *p - 'a' + 10), p++;
		if (end > start && start < 0xffff800000000000UL)
			syscall(SYS_madvise, start, end - start, MADV_NOHUGEPAGE);
		while (*p && *p != '\n')
			p++;
		if (*p)
			p++;
	}
}

/* Fault in the stack the agent will ever use, so that later ops never grow it. */
static void __attribute__((noinline)) prefault_stack(void)
{
	volatile char buf[64 * 1024];
	size_t i;

	for (i = 0; i < sizeof(buf); i += PAGE)
		buf[i] = 0;
}

static void do_mmap(const struct msg *m, struct reply *r)
{
	uint64_t size = m->a[0], misalign = m->a[2];
	int prot = m->a[3] ? PROT_NONE : (int)m->a[1];
	uint64_t span = ((misalign + size + PMD_SIZE - 1) & ~(PMD_SIZE - 1)) + 3 * PMD_SIZE;
	long g, rc;
	uint64_t base, addr, t0, t1;

	g = syscall(SYS_mmap, 0, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		    -1, 0);
	if ((void *)g == MAP_FAILED) {
		r->result = -1;
		r->err = errno;
		return;
	}
	base = ((uint64_t)g + PMD_SIZE + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
	addr = base + misalign;
	/*
	 * Punch the region's hole into the guard first and map into the hole, instead of letting
	 * MAP_FIXED replace the guard: the VMAs come out the same, but then the mapping is a real
	 * expansion of the address space, checked against RLIMIT_DATA (mm/mmap.c: may_expand_vm
	 * only counts pages that were not mapped before).
	 */
	syscall(SYS_munmap, addr, size);
	t0 = now_ns();
	rc = syscall(SYS_mmap, addr, size, prot,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	t1 = now_ns();
	finish(r, (void *)rc == MAP_FAILED ? -1 : 0, errno, t0, t1);
	if ((void *)rc == MAP_FAILED)
		syscall(SYS_munmap, g, span); /* leave nothing at the region's addresses */
	r->extra = addr;
}

static void do_write(const struct msg *m, struct reply *r)
{
	volatile uint64_t *p;
	uint64_t a = m->a[0], end = m->a[0] + m->a[1], v = m->a[2], t0, t1;

	t0 = now_ns();
	for (; a < end; a += PAGE) {
		p = (volatile uint64_t *)a;
		*p = v;
	}
	t1 = now_ns();
	finish(r, 0, 0, t0, t1);
}

static void do_read(const struct msg *m, struct reply *r)
{
	volatile uint8_t *p;
	uint64_t a = m->a[0], end = m->a[0] + m->a[1], t0, t1;
	uint8_t sink = 0;

	t0 = now_ns();
	for (; a < end; a += PAGE) {
		p = (volatile uint8_t *)a;
		sink ^= *p;
	}
	t1 = now_ns();
	(void)sink;
	finish(r, 0, 0, t0, t1);
}

static void do_pin(const struct msg *m, struct reply *r)
{
	struct io_uring_params params;
	struct iovec iov;
	uint64_t slot = m->a[0], t0, t1;
	long fd, rc;
	int e;

	if (slot >= MAX_PINS || rings[slot] >= 0) {
		r->result = -1;
		r->err = EINVAL;
		return;
	}
	memset(&params, 0, sizeof(params));
	fd = syscall(SYS_io_uring_setup, 1, &params);
	if (fd < 0) {
		r->result = -1;
		r->err = errno;
		return;
	}
	iov.iov_base = (void *)m->a[1];
	iov.iov_len = m->a[2];
	t0 = now_ns();
	rc = syscall(SYS_io_uring_register, fd, IORING_REGISTER_BUFFERS, &iov, 1);
	t1 = now_ns();
	e = errno;
	finish(r, rc, e, t0, t1);
	if (rc < 0)
		syscall(SYS_close, fd);
	else
		rings[slot] = (int)fd;
}

static void do_unpin(const struct msg *m, struct reply *r)
{
	uint64_t slot = m->a[0], t0, t1;
	long rc;
	int e;

	if (slot >= MAX_PINS || rings[slot] < 0) {
		r->result = -1;
		r->err = EBADF;
		return;
	}
	t0 = now_ns();
	rc = syscall(SYS_io_uring_register, rings[slot], IORING_UNREGISTER_BUFFERS, NULL, 0);
	t1 = now_ns();
	e = errno;
	finish(r, rc, e, t0, t1);
	syscall(SYS_close, rings[slot]);
	rings[slot] = -1;
}

/* Returns 1 in a forked child (which must not send the fork reply). */
static int handle(const struct msg *m, struct reply *r)
{
	uint64_t t0, t1;
	long rc;

	memset(r, 0, sizeof(*r));
	errno = 0;
	switch (m->op) {
	case OP_MMAP:
		do_mmap(m, r);
		return 0;
	case OP_MUNMAP:
		t0 = now_ns();
		rc = syscall(SYS_munmap, m->a[0], m->a[1]);
		t1 = now_ns();
		break;
	case OP_MPROTECT:
		t0 = now_ns();
		rc = syscall(SYS_mprotect, m->a[0], m->a[1], m->a[2]);
		t1 = now_ns();
		break;
	case OP_MADVISE:
		t0 = now_ns();
		rc = syscall(SYS_madvise, m->a[0], m->a[1], m->a[2]);
		t1 = now_ns();
		break;
	case OP_MLOCK:
		t0 = now_ns();
		if (m->a[2])
			rc = syscall(SYS_mlock2, m->a[0], m->a[1], MLOCK_ONFAULT);
		else
			rc = syscall(SYS_mlock, m->a[0], m->a[1]);
		t1 = now_ns();
		break;
	case OP_MUNLOCK:
		t0 = now_ns();
		rc = syscall(SYS_munlock, m->a[0], m->a[1]);
		t1 = now_ns();
		break;
	case OP_MLOCKALL:
		t0 = now_ns();
		rc = syscall(SYS_mlockall, m->a[0]);
		t1 = now_ns();
		break;
	case OP_MUNLOCKALL:
		t0 = now_ns();
		rc = syscall(SYS_munlockall);
		t1 = now_ns();
		break;
	case OP_MREMAP:
		t0 = now_ns();
		rc = syscall(SYS_mremap, m->a[0], m->a[1], m->a[2], MREMAP_MAYMOVE | MREMAP_FIXED,
			     m->a[3]);
		t1 = now_ns();
		if ((void *)rc != MAP_FAILED)
			rc = 0;
		break;
	case OP_WRITE:
		do_write(m, r);
		return 0;
	case OP_READ:
		do_read(m, r);
		return 0;
	case OP_PIN:
		do_pin(m, r);
		return 0;
	case OP_UNPIN:
		do_unpin(m, r);
		return 0;
	case OP_FORK:
#ifdef SYS_fork
		t0 = now_ns();
		rc = syscall(SYS_fork);
		t1 = now_ns();
#else
		t0 = now_ns();
		rc = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
		t1 = now_ns();
#endif
		if (rc == 0) {
			syscall(SYS_close, ctrl);
			ctrl = connect_ctrl();
			if (ctrl < 0 || say_hello() < 0)
				syscall(SYS_exit_group, 5);
			return 1;
		}
		finish(r, rc, errno, t0, t1);
		r->extra = rc > 0 ? (uint64_t)rc : 0;
		return 0;
	case OP_EXIT:
		return 0;
	default:
		r->result = -1;
		r->err = ENOSYS;
		return 0;
	}
	finish(r, rc, errno, t0, t1);
	return 0;
}

static int serve(void)
{
	struct msg m;
	struct reply r;
	ssize_t n;

	for (;;) {
		n = recv(ctrl, &m, sizeof(m), 0);
		if (n == 0)
			return 0; /* the controller is gone */
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(m))
			return 3;
		if (handle(&m, &r))
			continue; /* forked child: connected anew, serve its own commands */
		if (send(ctrl, &r, sizeof(r), MSG_NOSIGNAL) != (ssize_t)sizeof(r))
			return 4;
		if (m.op == OP_EXIT)
			return 0;
	}
}

static unsigned long parse_ul(const char *s)
{
	unsigned long v = 0;

	while (*s >= '0' && *s <= '9')
		v = v * 10 + (unsigned long)(*s++ - '0');
	return v;
}

static int helper(void)
{
	uint64_t span = 2 * PMD_SIZE, a, end;
	long g;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		return 1;
	g = syscall(SYS_mmap, 0, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((void *)g == MAP_FAILED)
		return 2;
	a = ((uint64_t)g + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
	syscall(SYS_madvise, a, PMD_SIZE, MADV_HUGEPAGE);
	for (end = a + PMD_SIZE; a < end; a += PAGE)
		*(volatile uint64_t *)a = 0x666f6c696f73696dULL;
	if (write(1, "ready\n", 6) != 6)
		return 3;
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	struct sigaction act;
	cpu_set_t set;
	size_t len;
	int i;

	if (argc >= 2 && strcmp(argv[1], "helper") == 0)
		return helper();
	if (argc < 6 || strcmp(argv[1], "agent") != 0)
		return 2;
	for (i = 0; i < MAX_PINS; i++)
		rings[i] = -1;
	memset(&act, 0, sizeof(act));
	act.sa_handler = SIG_IGN;
	sigaction(SIGCHLD, &act, NULL); /* forked agents are reaped by the kernel */
	sigaction(SIGPIPE, &act, NULL);

	if (strcmp(argv[3], "-") != 0) {
		CPU_ZERO(&set);
		CPU_SET((int)parse_ul(argv[3]), &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			return 10;
	}
	if (strcmp(argv[4], "-") != 0) {
		char pid[32];
		int n = 0, fd;
		unsigned long v = (unsigned long)syscall(SYS_getpid);
		char tmp[32];

		do
			tmp[n++] = (char)('0' + v % 10);
		while ((v /= 10) != 0);
		for (i = 0; i < n; i++)
			pid[i] = tmp[n - 1 - i];
		pid[n++] = '\n';
		fd = (int)syscall(SYS_openat, AT_FDCWD, argv[4], O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, pid, (size_t)n) != n)
			return 11;
		syscall(SYS_close, fd);
	}
	if (parse_ul(argv[5]) > 0) {
		struct rlimit rl;

		rl.rlim_cur = rl.rlim_max = parse_ul(argv[5]);
		if (setrlimit(RLIMIT_DATA, &rl) < 0)
			return 12;
	}
	nohugepage_self();
	prefault_stack();
	/*
	 * The controller starts agents with PR_SET_THP_DISABLE inherited (MMF_INIT_MASK), so that
	 * nothing of the agent's own memory got a THP while exec and the lines above faulted it;
	 * from here on its own mappings are MADV_NOHUGEPAGE, and the flag is cleared before any
	 * scenario operation, so scenario processes (and their forked children) run without it.
	 */
	if (prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0) < 0)
		return 15;

	len = strlen(argv[2]);
	if (len + 1 > sizeof(sa.sun_path))
		return 13;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path + 1, argv[2], len); /* abstract namespace */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
	ctrl = connect_ctrl();
	if (ctrl < 0 || say_hello() < 0)
		return 14;
	/* exit_group(2) right away: no atexit handlers or stdio flushing in any agent */
	syscall(SYS_exit_group, serve());
	return 0;
}
