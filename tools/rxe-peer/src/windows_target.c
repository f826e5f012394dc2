/* Memory windows (type 1 and 2) against Linux rxe for `vhca windows`, run on the rxe peer
 * guest: a small verbs server that vhca drives one command at a time over TCP, so that the
 * same program plays rxe's part whether rxe owns the windows (vhca WRITEs and READs through
 * them, invalidates one by SEND_WITH_INV) or vhca does (this program WRITEs and READs through
 * vhca's windows and fast-register MR, and SEND_WITH_INVs one of them).
 *
 *   windows_target [-d DEV] [-g GID_INDEX] [-p PORT]
 *
 * It registers a 64 KiB buffer with LOCAL_WRITE and MW_BIND only (remote access comes from
 * windows alone): [0, 32K) is where its windows go, [32K, 48K) the source of its WRITEs and
 * [48K, 64K) the destination of its READs. Lines each way (numbers in hex unless noted):
 *   vhca:   "VHCA-WINDOWS <n> <gid:32 hex> <qpn> <psn> ..." (n <= 8 QPs)
 *   target: "VHCA-WINDOWS <n> <gid:32 hex> <buffer addr> <qpn> <psn> ..."
 * then n RC QPs are connected pairwise, and each command gets one answer line:
 *   BIND1 q off len         type 1 window (allocated once, rebound each time) by ibv_bind_mw
 *                           on QP q over [off, off+len): "KEY <rkey> <addr>"
 *   BIND2 q off len         a new type 2 window bound by an IBV_WR_BIND_MW work request:
 *                           "KEY <rkey> <addr>"
 *   WRITE q rkey addr len seed   RDMA WRITE of pattern(seed): "WC <status, decimal>"
 *   READ q rkey addr len seed    RDMA READ: "WC <status> <1 when the bytes are pattern(seed)>"
 *   SENDINV q rkey          SEND_WITH_INV of 16 bytes: "WC <status>"
 *   POSTRECV q              posts a 64-byte receive: "OK"
 *   RECVWC q                its completion: "RECV <status> <wc_flags> <invalidated_rkey>"
 *                           (the flags and the imm/invalidated_rkey union as rxe wrote them)
 *   FILL off len seed       pattern(seed) into the buffer: "OK"
 *   EXPECT off len seed     "MATCH <1 when the buffer holds pattern(seed) there>"
 *   STATE q                 "STATE <ibv_qp_state, decimal>"
 *   QUIT                    exits 0
 * A work completion that does not come within 60 s answers status -1. pattern(seed) byte i is
 * (i * 31) ^ seed. Setup or protocol failures exit 1; every read of the channel is bounded (a
 * line of at most 255 bytes, 300 s without one ends the program).
 *
 * Written for this project against libibverbs' public verbs.h (Debian's libibverbs-dev). */
#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BUF_LEN 65536
#define WIN_END 32768
#define SRC_OFF 32768
#define DST_OFF 49152
#define IO_MAX 16384
#define MAX_QPS 8
#define MAX_MW2 8
#define WC_TIMEOUT_MS 60000

static struct ibv_context *ctx;
static struct ibv_pd *pd;
static struct ibv_mr *mr;
static struct ibv_comp_channel *chan;
static uint8_t *buf;
static int nqp;
static struct ibv_qp *qp[MAX_QPS];
static struct ibv_cq *scq[MAX_QPS], *rcq[MAX_QPS];
static struct ibv_mw *mw1, *mw2[MAX_MW2];
static int nmw2;

static void die(const char *what)
{
	fprintf(stderr, "windows_target: %s (errno %d)\n", what, errno);
	exit(1);
}

static int read_line(int fd, char *line, size_t len)
{
	size_t n = 0;
	while (n + 1 < len) {
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r <= 0)
			return -1;
		if (c == '\n') {
			line[n] = 0;
			return 0;
		}
		line[n++] = c;
	}
	return -1; /* longer than any line of the protocol */
}

static uint8_t pat(uint32_t i, uint32_t seed)
{
	return (uint8_t)((i * 31) ^ seed);
}

static void fill(uint8_t *p, uint32_t len, uint32_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = pat(i, seed);
}

static int matches(const uint8_t *p, uint32_t len, uint32_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i] != pat(i, seed))
			return 0;
	return 1;
}

static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One completion of `cq`, waiting on the completion channel (no busy loop): 1, or 0 when none
 * came within WC_TIMEOUT_MS. */
static int wait_wc(struct ibv_cq *cq, struct ibv_wc *wc)
{
	long long deadline = now_ms() + WC_TIMEOUT_MS;
	for (;;) {
		int n = ibv_poll_cq(cq, 1, wc);
		if (n < 0)
			die("ibv_poll_cq");
		if (n == 1)
			return 1;
		if (ibv_req_notify_cq(cq, 0))
			die("ibv_req_notify_cq");
		n = ibv_poll_cq(cq, 1, wc);
		if (n < 0)
			die("ibv_poll_cq");
		if (n == 1)
			return 1;
		long long left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = { .fd = chan->fd, .events = POLLIN };
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			die("poll");
		if (p.revents & POLLIN) {
			struct ibv_cq *ev;
			void *ev_ctx;
			if (ibv_get_cq_event(chan, &ev, &ev_ctx))
				die("ibv_get_cq_event");
			ibv_ack_cq_events(ev, 1);
		}
	}
}

static int wc_status(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	if (!wait_wc(cq, &wc))
		return -1;
	return wc.status;
}

static void gid_to_hex(const union ibv_gid *g, char *out)
{
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", g->raw[i]);
}

static int hex_to_gid(const char *s, union ibv_gid *g)
{
	if (strlen(s) != 32)
		return -1;
	for (int i = 0; i < 16; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		g->raw[i] = (uint8_t)v;
	}
	return 0;
}

static void connect_qp(struct ibv_qp *q, int gid_index, union ibv_gid *peer_gid, uint32_t peer_qpn,
		       uint32_t peer_psn, uint32_t my_psn)
{
	struct ibv_qp_attr a = { 0 };
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = peer_qpn;
	a.rq_psn = peer_psn;
	a.max_dest_rd_atomic = 16;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = *peer_gid;
	a.ah_attr.grh.sgid_index = gid_index;
	a.ah_attr.grh.hop_limit = 64;
	a.ah_attr.port_num = 1;
	if (ibv_modify_qp(q, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
					 IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
					 IBV_QP_MIN_RNR_TIMER))
		die("RTR");
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = my_psn;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 16;
	if (ibv_modify_qp(q, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
					 IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC))
		die("RTS");
}

static int post(int q, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad;
	return ibv_post_send(qp[q], wr, &bad);
}

static int rdma(int q, enum ibv_wr_opcode op, uint32_t rkey, uint64_t addr, uint32_t len,
		uint32_t off)
{
	struct ibv_sge sge = { .addr = (uintptr_t)(buf + off), .length = len, .lkey = mr->lkey };
	struct ibv_send_wr wr = { .wr_id = 1, .sg_list = &sge, .num_sge = 1, .opcode = op,
				  .send_flags = IBV_SEND_SIGNALED };
	wr.wr.rdma.remote_addr = addr;
	wr.wr.rdma.rkey = rkey;
	if (post(q, &wr))
		die("ibv_post_send (RDMA)");
	return wc_status(scq[q]);
}

static const int mw_rights = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

/* Answers one command line into `out`; 1 on QUIT. */
static int command(const char *line, char *out, size_t outlen)
{
	char cmd[16];
	unsigned q = 0, a1 = 0, a3 = 0, a4 = 0;
	unsigned long long a2 = 0;
	int n = sscanf(line, "%15s %x %x %llx %x %x", cmd, &q, &a1, &a2, &a3, &a4);
	if (n < 1)
		die("empty command");
	int needs_qp = strcmp(cmd, "FILL") && strcmp(cmd, "EXPECT") && strcmp(cmd, "QUIT");
	if (needs_qp && (n < 2 || q >= (unsigned)nqp))
		die("bad QP in a command");

	if (!strcmp(cmd, "BIND1") || !strcmp(cmd, "BIND2")) {
		/* BINDx q off len: here a1 = off, a2 = len */
		unsigned long long off = a1, len = a2;
		if (n != 4 || off > WIN_END || len > WIN_END - off)
			die("bad BIND");
		struct ibv_mw_bind_info info = { .mr = mr, .addr = (uintptr_t)(buf + off),
						 .length = len, .mw_access_flags = mw_rights };
		uint32_t rkey;
		if (cmd[4] == '1') {
			if (!mw1 && !(mw1 = ibv_alloc_mw(pd, IBV_MW_TYPE_1)))
				die("ibv_alloc_mw (type 1)");
			struct ibv_mw_bind b = { .wr_id = 2, .send_flags = IBV_SEND_SIGNALED,
						 .bind_info = info };
			if (ibv_bind_mw(qp[q], mw1, &b))
				die("ibv_bind_mw");
			rkey = mw1->rkey;
		} else {
			if (nmw2 == MAX_MW2)
				die("too many type 2 windows");
			struct ibv_mw *w = ibv_alloc_mw(pd, IBV_MW_TYPE_2);
			if (!w)
				die("ibv_alloc_mw (type 2)");
			mw2[nmw2++] = w;
			struct ibv_send_wr wr = { .wr_id = 3, .opcode = IBV_WR_BIND_MW,
						  .send_flags = IBV_SEND_SIGNALED };
			wr.bind_mw.mw = w;
			rkey = ibv_inc_rkey(w->rkey);
			wr.bind_mw.rkey = rkey;
			wr.bind_mw.bind_info = info;
			if (post(q, &wr))
				die("ibv_post_send (BIND_MW)");
		}
		struct ibv_wc wc;
		if (!wait_wc(scq[q], &wc))
			die("no completion for a bind");
		if (wc.status != IBV_WC_SUCCESS || wc.opcode != IBV_WC_BIND_MW) {
			fprintf(stderr, "windows_target: bind: %s (opcode %d)\n",
				ibv_wc_status_str(wc.status), wc.opcode);
			exit(1);
		}
		snprintf(out, outlen, "KEY %x %llx", rkey,
			 (unsigned long long)(uintptr_t)(buf + off));
	} else if (!strcmp(cmd, "WRITE") || !strcmp(cmd, "READ")) {
		/* q rkey addr len seed */
		if (n != 6 || a3 > IO_MAX)
			die("bad WRITE/READ");
		if (cmd[0] == 'W') {
			fill(buf + SRC_OFF, a3, a4);
			snprintf(out, outlen, "WC %d", rdma(q, IBV_WR_RDMA_WRITE, a1, a2, a3, SRC_OFF));
		} else {
			memset(buf + DST_OFF, 0, a3);
			int st = rdma(q, IBV_WR_RDMA_READ, a1, a2, a3, DST_OFF);
			snprintf(out, outlen, "WC %d %d", st,
				 st == IBV_WC_SUCCESS && matches(buf + DST_OFF, a3, a4));
		}
	} else if (!strcmp(cmd, "SENDINV")) {
		if (n != 3)
			die("bad SENDINV");
		fill(buf + SRC_OFF, 16, 0x77);
		struct ibv_sge sge = { .addr = (uintptr_t)(buf + SRC_OFF), .length = 16,
				       .lkey = mr->lkey };
		struct ibv_send_wr wr = { .wr_id = 4, .sg_list = &sge, .num_sge = 1,
					  .opcode = IBV_WR_SEND_WITH_INV,
					  .send_flags = IBV_SEND_SIGNALED };
		wr.invalidate_rkey = a1;
		if (post(q, &wr))
			die("ibv_post_send (SEND_WITH_INV)");
		snprintf(out, outlen, "WC %d", wc_status(scq[q]));
	} else if (!strcmp(cmd, "POSTRECV")) {
		struct ibv_sge sge = { .addr = (uintptr_t)(buf + DST_OFF), .length = 64,
				       .lkey = mr->lkey };
		struct ibv_recv_wr wr = { .wr_id = 5, .sg_list = &sge, .num_sge = 1 }, *bad;
		if (ibv_post_recv(qp[q], &wr, &bad))
			die("ibv_post_recv");
		snprintf(out, outlen, "OK");
	} else if (!strcmp(cmd, "RECVWC")) {
		struct ibv_wc wc;
		if (!wait_wc(rcq[q], &wc))
			snprintf(out, outlen, "RECV -1 0 0");
		else
			snprintf(out, outlen, "RECV %d %x %x", wc.status, wc.wc_flags,
				 wc.invalidated_rkey);
	} else if (!strcmp(cmd, "FILL") || !strcmp(cmd, "EXPECT")) {
		/* off len seed, parsed into q a1 a2 */
		unsigned off = q, len = a1;
		if (n != 4 || off > WIN_END || len > WIN_END - off)
			die("bad FILL/EXPECT");
		if (cmd[0] == 'F') {
			fill(buf + off, len, (uint32_t)a2);
			snprintf(out, outlen, "OK");
		} else {
			snprintf(out, outlen, "MATCH %d", matches(buf + off, len, (uint32_t)a2));
		}
	} else if (!strcmp(cmd, "STATE")) {
		struct ibv_qp_attr qa;
		struct ibv_qp_init_attr qi;
		if (ibv_query_qp(qp[q], &qa, IBV_QP_STATE, &qi))
			die("ibv_query_qp");
		snprintf(out, outlen, "STATE %d", qa.qp_state);
	} else if (!strcmp(cmd, "QUIT")) {
		return 1;
	} else {
		die("unknown command");
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *dev_name = "rxe0";
	int gid_index = 1, port = 18516, opt;
	while ((opt = getopt(argc, argv, "d:g:p:")) != -1) {
		switch (opt) {
		case 'd': dev_name = optarg; break;
		case 'g': gid_index = atoi(optarg); break;
		case 'p': port = atoi(optarg); break;
		default: die("usage: windows_target [-d DEV] [-g GID_INDEX] [-p PORT]");
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	struct ibv_device **list = ibv_get_device_list(NULL), *dev = NULL;
	for (int i = 0; list && list[i]; i++)
		if (!strcmp(ibv_get_device_name(list[i]), dev_name))
			dev = list[i];
	if (!dev)
		die("no such device");
	if (!(ctx = ibv_open_device(dev)) || !(pd = ibv_alloc_pd(ctx)) ||
	    !(chan = ibv_create_comp_channel(ctx)))
		die("open");
	if (posix_memalign((void **)&buf, 4096, BUF_LEN))
		die("alloc");
	memset(buf, 0, BUF_LEN);
	/* No remote right on the MR itself: only windows open it to the peer. */
	mr = ibv_reg_mr(pd, buf, BUF_LEN, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
	if (!mr)
		die("ibv_reg_mr with MW_BIND");
	union ibv_gid my_gid;
	if (ibv_query_gid(ctx, 1, gid_index, &my_gid))
		die("ibv_query_gid");

	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 1))
		die("listen");
	int fd = accept(ls, NULL, NULL);
	if (fd < 0)
		die("accept");
	struct timeval tv = { .tv_sec = 300 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

	char line[256], peer_gid_hex[40], out[512];
	int used;
	if (read_line(fd, line, sizeof line) ||
	    sscanf(line, "VHCA-WINDOWS %x %39s%n", (unsigned *)&nqp, peer_gid_hex, &used) != 2 ||
	    nqp < 1 || nqp > MAX_QPS)
		die("bad hello");
	union ibv_gid peer_gid;
	if (hex_to_gid(peer_gid_hex, &peer_gid))
		die("bad GID");
	uint32_t peer_qpn[MAX_QPS], peer_psn[MAX_QPS];
	const char *p = line + used;
	for (int i = 0; i < nqp; i++) {
		int k;
		if (sscanf(p, " %x %x%n", &peer_qpn[i], &peer_psn[i], &k) != 2)
			die("bad hello");
		p += k;
	}

	char gid_hex[33];
	gid_to_hex(&my_gid, gid_hex);
	int len = snprintf(out, sizeof out, "VHCA-WINDOWS %x %s %llx", nqp, gid_hex,
			   (unsigned long long)(uintptr_t)buf);
	for (int i = 0; i < nqp; i++) {
		if (!(scq[i] = ibv_create_cq(ctx, 16, NULL, chan, 0)) ||
		    !(rcq[i] = ibv_create_cq(ctx, 16, NULL, chan, 0)))
			die("ibv_create_cq");
		struct ibv_qp_init_attr init = {
			.send_cq = scq[i], .recv_cq = rcq[i], .qp_type = IBV_QPT_RC,
			.cap = { .max_send_wr = 8, .max_recv_wr = 4, .max_send_sge = 1,
				 .max_recv_sge = 1 },
		};
		if (!(qp[i] = ibv_create_qp(pd, &init)))
			die("ibv_create_qp");
		struct ibv_qp_attr a = {
			.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = 1,
			.qp_access_flags = mw_rights,
		};
		if (ibv_modify_qp(qp[i], &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
						     IBV_QP_ACCESS_FLAGS))
			die("INIT");
		len += snprintf(out + len, sizeof out - len, " %x %x", qp[i]->qp_num,
				0x100000u * (unsigned)i + 0x2a3b4);
	}
	for (int i = 0; i < nqp; i++)
		connect_qp(qp[i], gid_index, &peer_gid, peer_qpn[i], peer_psn[i],
			   0x100000u * (unsigned)i + 0x2a3b4);
	len += snprintf(out + len, sizeof out - len, "\n");
	if (write(fd, out, len) != len)
		die("write");

	for (;;) {
		if (read_line(fd, line, sizeof line))
			die("side channel closed or timed out");
		printf("windows_target: %s", line);
		if (command(line, out, sizeof out - 1)) {
			printf("\n");
			break;
		}
		printf(" -> %s\n", out);
		size_t l = strlen(out);
		out[l++] = '\n';
		if (write(fd, out, l) != (ssize_t)l)
			die("write");
	}
	close(fd);
	return 0;
}
