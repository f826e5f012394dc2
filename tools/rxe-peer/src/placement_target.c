/* The responder side of IBTA 1.5's ATOMIC WRITE and FLUSH for `vhca placement`, run on the rxe
 * peer guest (Linux rxe >= 6.2 executes both; no stock tool posts or serves them).
 *
 *   placement_target [-d DEV] [-g GID_INDEX] [-p PORT]
 *
 * It registers a 4 KiB buffer with REMOTE_WRITE and FLUSH_GLOBAL, opens an RC QP to them, and
 * speaks one line each way over TCP (hex fields):
 *   client: "VHCA-PLACEMENT <qpn> <psn> <gid:32 hex>"
 *   server: "VHCA-PLACEMENT <qpn> <psn> <gid:32 hex> <addr> <rkey>"
 * then connects its QP. When the client sends "CHECK <len>", it answers with the first <len>
 * bytes of its buffer in hex and exits 0; any verbs or protocol failure exits 1.
 *
 * Written for this project against libibverbs' public verbs.h (Debian's libibverbs-dev); the
 * FLUSH access bits are IBTA 1.5's values, defined here when the header predates them. */
#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IBV_ACCESS_FLUSH_GLOBAL
#define IBV_ACCESS_FLUSH_GLOBAL (1 << 8)
#endif

#define BUF_LEN 4096

static void die(const char *what)
{
	fprintf(stderr, "placement_target: %s\n", what);
	exit(1);
}

static int read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;
	while (n + 1 < len) {
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r <= 0)
			return -1;
		if (c == '\n')
			break;
		buf[n++] = c;
	}
	buf[n] = 0;
	return 0;
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

int main(int argc, char **argv)
{
	const char *dev_name = "rxe0";
	int gid_index = 1, port = 18515, opt;
	while ((opt = getopt(argc, argv, "d:g:p:")) != -1) {
		switch (opt) {
		case 'd': dev_name = optarg; break;
		case 'g': gid_index = atoi(optarg); break;
		case 'p': port = atoi(optarg); break;
		default: die("usage: placement_target [-d DEV] [-g GID_INDEX] [-p PORT]");
		}
	}

	struct ibv_device **list = ibv_get_device_list(NULL), *dev = NULL;
	for (int i = 0; list && list[i]; i++)
		if (!strcmp(ibv_get_device_name(list[i]), dev_name))
			dev = list[i];
	if (!dev)
		die("no such device");
	struct ibv_context *ctx = ibv_open_device(dev);
	if (!ctx)
		die("ibv_open_device");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	void *buf = NULL;
	if (!pd || posix_memalign(&buf, 4096, BUF_LEN))
		die("alloc");
	memset(buf, 0, BUF_LEN);
	int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
		     IBV_ACCESS_FLUSH_GLOBAL;
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, BUF_LEN, access);
	if (!mr)
		die("ibv_reg_mr with FLUSH_GLOBAL (needs rxe >= 6.2)");
	struct ibv_cq *cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	if (!cq)
		die("ibv_create_cq");
	struct ibv_qp_init_attr init = {
		.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 },
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &init);
	if (!qp)
		die("ibv_create_qp");
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = 1,
		.qp_access_flags = access & ~IBV_ACCESS_LOCAL_WRITE,
	};
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		die("INIT");
	union ibv_gid my_gid;
	if (ibv_query_gid(ctx, 1, gid_index, &my_gid))
		die("ibv_query_gid");
	uint32_t my_psn = 0x4d5e6f;

	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 1))
		die("listen");
	int fd = accept(ls, NULL, NULL);
	if (fd < 0)
		die("accept");

	char line[256], gid_hex[33], peer_gid_hex[64];
	unsigned peer_qpn, peer_psn;
	if (read_line(fd, line, sizeof line) ||
	    sscanf(line, "VHCA-PLACEMENT %x %x %63s", &peer_qpn, &peer_psn, peer_gid_hex) != 3)
		die("bad hello");
	union ibv_gid peer_gid;
	if (hex_to_gid(peer_gid_hex, &peer_gid))
		die("bad GID");
	gid_to_hex(&my_gid, gid_hex);
	dprintf(fd, "VHCA-PLACEMENT %x %x %s %llx %x\n", qp->qp_num, my_psn, gid_hex,
		(unsigned long long)(uintptr_t)buf, mr->rkey);

	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = peer_qpn;
	a.rq_psn = peer_psn;
	a.max_dest_rd_atomic = 16;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = peer_gid;
	a.ah_attr.grh.sgid_index = gid_index;
	a.ah_attr.grh.hop_limit = 64;
	a.ah_attr.port_num = 1;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
					  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
					  IBV_QP_MIN_RNR_TIMER))
		die("RTR");
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = my_psn;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 16;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
					  IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC))
		die("RTS");

	unsigned len;
	if (read_line(fd, line, sizeof line) || sscanf(line, "CHECK %u", &len) != 1 || len > BUF_LEN)
		die("bad CHECK");
	char *hex = malloc(2 * len + 2);
	if (!hex)
		die("malloc");
	for (unsigned i = 0; i < len; i++)
		sprintf(hex + 2 * i, "%02x", ((uint8_t *)buf)[i]);
	hex[2 * len] = '\n';
	hex[2 * len + 1] = 0;
	if (write(fd, hex, 2 * len + 1) != (ssize_t)(2 * len + 1))
		die("write");
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr qi;
	if (ibv_query_qp(qp, &qa, IBV_QP_STATE, &qi))
		die("ibv_query_qp");
	printf("placement_target: QP %#x in state %d after the run; buffer %s", qp->qp_num,
	       qa.qp_state, hex);
	close(fd);
	/* The QP must still be in RTS: every request vhca sent was accepted. */
	return qa.qp_state == IBV_QPS_RTS ? 0 : 1;
}
