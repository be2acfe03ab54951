/* The yardstick for the agent's own cost (issue 10, item 8): containerd's per-layer start path,
 * the same system calls in the same order as the agent's `per-layer` strategy, and nothing else:
 * no checks, no counting, no bookkeeping. Per container, every pass:
 *   L × (open_tree(OPEN_TREE_CLONE) → mount_setattr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY) →
 *        move_mount to l/<i> → close), mount("overlay", m), L × umount2(l/<i>),
 * timed from the first call to the last umount; then umount2(m) (teardown, not timed). As in the
 * agent, each container has fresh directories below c/<idx>, its own user namespace, and the
 * calls use paths relative to its directory. The user namespaces are all made before the first
 * container starts: each takes a fork, and a fork right before a container's clock would bill
 * it for the copy-on-write faults the fork leaves behind.
 *
 * Usage: startpath SCRATCH LAYERS CONTAINERS PASSES  (root; in a private mount namespace of its
 * own). Prints one line: `startpath per-container-us: <v> <v> …`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif

struct attr { uint64_t set, clr, propagation, userns_fd; };

static void die(const char *what) { perror(what); exit(1); }

static uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void mkdir_or_die(const char *p, mode_t m) {
	if (mkdir(p, m) && errno != EEXIST) die(p);
}

/* A child in a new user namespace mapping 0..65535 to base..; returns its ns fd (the child is
 * killed right away: the fd keeps the namespace). */
static int userns(unsigned base) {
	int go[2];
	if (pipe(go)) die("pipe");
	pid_t pid = fork();
	if (pid < 0) die("fork");
	if (pid == 0) {
		if (unshare(CLONE_NEWUSER)) _exit(1);
		if (write(go[1], "u", 1) != 1) _exit(1);
		for (;;) pause(); /* until the parent has its maps written and its fd: then killed */
	}
	char c;
	if (read(go[0], &c, 1) != 1) die("userns child");
	char path[64], map[64];
	snprintf(map, sizeof map, "0 %u 65536\n", base);
	const char *files[] = {"uid_map", "gid_map"};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof path, "/proc/%d/%s", pid, files[i]);
		int fd = open(path, O_WRONLY);
		if (fd < 0 || write(fd, map, strlen(map)) < 0) die(path);
		close(fd);
	}
	snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
	int ns = open(path, O_RDONLY | O_CLOEXEC);
	if (ns < 0) die(path);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(go[0]);
	close(go[1]);
	return ns;
}

int main(int argc, char **argv) {
	if (argc != 5) {
		fprintf(stderr, "usage: %s SCRATCH LAYERS CONTAINERS PASSES\n", argv[0]);
		return 2;
	}
	const char *scratch = argv[1];
	int L = atoi(argv[2]), C = atoi(argv[3]), P = atoi(argv[4]);
	if (L < 1 || L > 256 || C < 1 || P < 1) return 2;
	if (unshare(CLONE_NEWNS)) die("unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("make / rprivate");
	char root[4096], path[4096];
	snprintf(root, sizeof root, "%s/startpath-%d", scratch, getpid());
	mkdir_or_die(root, 0755);
	snprintf(path, sizeof path, "%s/snapshots", root);
	mkdir_or_die(path, 0755);
	char **layer = calloc(L, sizeof *layer);
	for (int n = 1; n <= L; n++) {
		snprintf(path, sizeof path, "%s/snapshots/%d", root, n);
		mkdir_or_die(path, 0755);
		strcat(path, "/fs");
		mkdir_or_die(path, 0755);
		layer[n - 1] = strdup(path);
		char file[4200];
		snprintf(file, sizeof file, "%s/layer-%d", path, n);
		int fd = open(file, O_CREAT | O_WRONLY, 0644);
		if (fd < 0) die(file);
		close(fd);
	}
	/* Overlay options, top layer first, as the agent builds them. */
	static char view[8192], rootfs[8192];
	char lowers[8192] = "";
	for (int i = L - 1; i >= 0; i--) {
		char one[32];
		snprintf(one, sizeof one, "%sl/%d", i == L - 1 ? "" : ":", i);
		strcat(lowers, one);
	}
	snprintf(view, sizeof view, "lowerdir=u:%s", lowers);
	snprintf(rootfs, sizeof rootfs, "lowerdir=%s,upperdir=u,workdir=w", lowers);
	snprintf(path, sizeof path, "%s/c", root);
	mkdir_or_die(path, 0755);
	for (int c = 0; c < C; c++) {
		char d[4200];
		snprintf(d, sizeof d, "%s/c/%d", root, c);
		mkdir_or_die(d, 0755);
		const char *sub[] = {"u", "w", "m", "l"};
		for (int k = 0; k < 4; k++) {
			snprintf(path, sizeof path, "%s/%s", d, sub[k]);
			mkdir_or_die(path, 0755);
		}
		if (chown(strcat(strcpy(path, d), "/u"), 1000000 + c * 65536, 1000000 + c * 65536)) die("chown");
		for (int i = 0; i < L; i++) {
			snprintf(path, sizeof path, "%s/l/%d", d, i);
			mkdir_or_die(path, 0755);
		}
	}
	char targets[256][16];
	for (int i = 0; i < L; i++) snprintf(targets[i], sizeof targets[i], "l/%d", i);
	int *userns_fd = calloc(C, sizeof *userns_fd);
	for (int c = 0; c < C; c++) userns_fd[c] = userns(1000000 + c * 65536);
	printf("startpath per-container-us:");
	for (int c = 0; c < C; c++) {
		int ns = userns_fd[c];
		snprintf(path, sizeof path, "%s/c/%d", root, c);
		if (chdir(path)) die(path);
		uint64_t total = 0;
		for (int p = 0; p < P; p++) {
			int rootfs_pass = p == P - 1;
			uint64_t t0 = now_ns();
			for (int i = 0; i < L; i++) {
				int fd = syscall(SYS_open_tree, AT_FDCWD, layer[i], OPEN_TREE_CLONE | O_CLOEXEC);
				if (fd < 0) die("open_tree");
				struct attr a = {MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, 0, 0, (uint64_t)ns};
				if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &a, sizeof a)) die("mount_setattr");
				if (syscall(SYS_move_mount, fd, "", AT_FDCWD, targets[i], MOVE_MOUNT_F_EMPTY_PATH)) die("move_mount");
				close(fd);
			}
			if (mount("overlay", "m", "overlay", rootfs_pass ? 0 : MS_RDONLY, rootfs_pass ? rootfs : view))
				die("mount overlay");
			for (int i = 0; i < L; i++) {
				while (umount2(targets[i], 0)) {
					if (errno != EBUSY) die("umount2");
					usleep(200);
				}
			}
			total += now_ns() - t0;
			while (umount2("m", 0)) {
				if (errno != EBUSY) die("umount2(m)");
				usleep(200);
			}
		}
		close(ns);
		printf(" %llu", (unsigned long long)(total / 1000));
		fflush(stdout);
	}
	printf("\n");
	if (chdir("/")) die("chdir /");
	char cmd[4300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : 1;
}
