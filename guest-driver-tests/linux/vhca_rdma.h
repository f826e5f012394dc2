/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * vhca_rdma: the Linux driver of a vhca VF (docs/device-protocol.md, docs/guest-stack.md).
 * Step 1 of the build order: virtio binding, the controlq command transport, the device's
 * identity from QUERY_DEVICE, and an ib_device bound to a netdev of its own.
 */
#ifndef VHCA_RDMA_H
#define VHCA_RDMA_H

#include <linux/completion.h>
#include <linux/mutex.h>
#include <linux/netdevice.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>
#include <rdma/ib_verbs.h>

/* Virtqueues (device-protocol.md §2). */
enum { VHCA_VQ_CONTROL, VHCA_VQ_DOORBELL, VHCA_VQ_EVENT, VHCA_NUM_VQS };

/* Control opcodes and statuses (device-protocol.md §6). */
#define VHCA_CMD_QUERY_DEVICE 1
#define VHCA_STATUS_OK 0
#define VHCA_CONFIG_SIZE 128
#define VHCA_EVENT_SIZE 16
#define VHCA_EVENT_BUFS 16
#define VHCA_VIRTIO_ID_RDMA 42

/* The configuration layout (device-protocol.md §4), decoded. */
struct vhca_config {
	u32 version;
	u32 phys_port_cnt;
	u64 node_guid;
	u64 port_guid;
	u8 gid[16];
	u8 mac[ETH_ALEN];
	u8 port_state;
	u8 active_mtu;
	u32 max_qp, max_qp_wr, max_sge, max_inline_data, max_cq, max_cqe;
	u32 max_mr, max_pd, max_srq, max_srq_wr, max_ah, max_msg_sz;
	u64 max_mr_size;
	u8 max_qp_rd_atom, max_qp_init_rd_atom;
	u64 page_size_cap;
	u32 cqe_size;
	u32 device_features;
};

struct vhca_dev {
	struct ib_device ib; /* first: ib_alloc_device() */
	struct virtio_device *vdev;
	struct virtqueue *vqs[VHCA_NUM_VQS];
	struct net_device *ndev;
	struct vhca_config cfg;
	__be32 ipv4; /* from the device's IPv4-mapped GID */

	/* One controlq command at a time: the mutex serializes, the callback completes. */
	struct mutex cmd_lock;
	struct completion cmd_done;
	spinlock_t cmd_vq_lock;
	/* A command that timed out: its buffers stay the device's until the device is reset. */
	void *lost_req, *lost_resp;

	spinlock_t event_lock;
	u8 *event_bufs; /* VHCA_EVENT_BUFS x VHCA_EVENT_SIZE, posted on the eventq */
	u64 events_seen;
};

/* cmd.c */
void vhca_cmd_callback(struct virtqueue *vq);
int vhca_cmd(struct vhca_dev *d, u16 opcode, const void *req, size_t req_len, void *resp,
	     size_t resp_len);
int vhca_cmd_query_device(struct vhca_dev *d);
void vhca_event_callback(struct virtqueue *vq);
int vhca_post_events(struct vhca_dev *d);

/* ib.c */
int vhca_ib_register(struct vhca_dev *d);
void vhca_ib_unregister(struct vhca_dev *d);

#endif
