// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The controlq command transport (device-protocol.md §6) and the eventq buffers (§9): the
 * same requests the user-space PCI driver sends (guest-driver-tests/src/pci/function.rs),
 * from a sleeping context, one at a time.
 */
#include <linux/errno.h>
#include <linux/jiffies.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/version.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif
#include <linux/virtio.h>

#include "vhca_rdma.h"

/* A bound, not a synchronization: TCG guests are slow; a device that never answers is dead. */
#define VHCA_CMD_TIMEOUT_MS 30000
#define VHCA_HDR 8

void vhca_cmd_callback(struct virtqueue *vq)
{
	struct vhca_dev *d = vq->vdev->priv;

	complete(&d->cmd_done);
}

static int vhca_status_errno(u32 status)
{
	switch (status) {
	case 1: return -ENOENT;     /* NOT_FOUND */
	case 2: return -ENOMEM;     /* EXHAUSTED */
	case 3: return -EINVAL;     /* INVALID */
	case 4: return -EBUSY;      /* BUSY */
	case 5: return -EINVAL;     /* BAD_STATE */
	case 6: return -ENOMEM;     /* QUEUE_FULL */
	case 7: return -EFAULT;     /* FAULT */
	case 9: return -EOPNOTSUPP; /* UNSUPPORTED */
	case 10: return -EINVAL;    /* MALFORMED */
	case 11: return -EINVAL;    /* RESPONSE_TOO_SMALL */
	default: return -EIO;
	}
}

/*
 * Sends one command and waits for its answer. `resp` receives exactly `resp_len` body bytes;
 * a shorter answer with status OK is a device error (-EPROTO). After a timeout the buffers stay
 * the device's (kept in lost_req/lost_resp until the device is reset) and every later command
 * fails: the device is treated as gone.
 */
int vhca_cmd(struct vhca_dev *d, u16 opcode, const void *req, size_t req_len, void *resp,
	     size_t resp_len)
{
	struct virtqueue *vq = d->vqs[VHCA_VQ_CONTROL];
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	unsigned long flags;
	unsigned int len = 0;
	u8 *rq, *rs;
	void *tok;
	u32 status;
	int err;

	mutex_lock(&d->cmd_lock);
	if (d->lost_req) {
		err = -EIO;
		goto unlock;
	}
	rq = kzalloc(VHCA_HDR + req_len, GFP_KERNEL);
	rs = kzalloc(VHCA_HDR + resp_len, GFP_KERNEL);
	if (!rq || !rs) {
		err = -ENOMEM;
		goto free;
	}
	put_unaligned_le16(opcode, rq);
	if (req_len)
		memcpy(rq + VHCA_HDR, req, req_len);
	sg_init_one(&out, rq, VHCA_HDR + req_len);
	sg_init_one(&in, rs, VHCA_HDR + resp_len);
	reinit_completion(&d->cmd_done);
	spin_lock_irqsave(&d->cmd_vq_lock, flags);
	err = virtqueue_add_sgs(vq, sgs, 1, 1, rq, GFP_ATOMIC);
	if (!err)
		virtqueue_kick(vq);
	spin_unlock_irqrestore(&d->cmd_vq_lock, flags);
	if (err)
		goto free;
	for (;;) {
		if (!wait_for_completion_timeout(&d->cmd_done,
						 msecs_to_jiffies(VHCA_CMD_TIMEOUT_MS))) {
			dev_err(&d->vdev->dev, "command %u: no answer in %u ms, device considered gone\n",
				opcode, VHCA_CMD_TIMEOUT_MS);
			d->lost_req = rq;
			d->lost_resp = rs;
			err = -ETIMEDOUT;
			goto unlock;
		}
		spin_lock_irqsave(&d->cmd_vq_lock, flags);
		tok = virtqueue_get_buf(vq, &len);
		spin_unlock_irqrestore(&d->cmd_vq_lock, flags);
		if (tok)
			break; /* else a notification without our buffer: wait on */
	}
	if (tok != rq || len < VHCA_HDR) {
		dev_err(&d->vdev->dev, "command %u: answer of %u bytes\n", opcode, len);
		err = -EPROTO;
		goto free;
	}
	status = get_unaligned_le32(rs);
	if (status != VHCA_STATUS_OK) {
		dev_dbg(&d->vdev->dev, "command %u: status %u\n", opcode, status);
		err = vhca_status_errno(status);
		goto free;
	}
	if (len < VHCA_HDR + resp_len) {
		dev_err(&d->vdev->dev, "command %u: answer of %u bytes, %zu expected\n", opcode, len,
			VHCA_HDR + resp_len);
		err = -EPROTO;
		goto free;
	}
	if (resp_len)
		memcpy(resp, rs + VHCA_HDR, resp_len);
	err = 0;
free:
	kfree(rq);
	kfree(rs);
unlock:
	mutex_unlock(&d->cmd_lock);
	return err;
}

/* QUERY_DEVICE: the configuration layout (§4), the only source of it in carrier mode. */
int vhca_cmd_query_device(struct vhca_dev *d)
{
	struct vhca_config *c = &d->cfg;
	u32 *limits[] = { &c->max_qp, &c->max_qp_wr, &c->max_sge, &c->max_inline_data, &c->max_cq,
			  &c->max_cqe, &c->max_mr, &c->max_pd, &c->max_srq, &c->max_srq_wr,
			  &c->max_ah, &c->max_msg_sz };
	u8 *b;
	int i, err;

	b = kzalloc(VHCA_CONFIG_SIZE, GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	err = vhca_cmd(d, VHCA_CMD_QUERY_DEVICE, NULL, 0, b, VHCA_CONFIG_SIZE);
	if (err)
		goto out;
	c->version = get_unaligned_le32(b + 0);
	c->phys_port_cnt = get_unaligned_le32(b + 4);
	c->node_guid = get_unaligned_le64(b + 8);
	c->port_guid = get_unaligned_le64(b + 16);
	memcpy(c->gid, b + 24, 16);
	memcpy(c->mac, b + 40, ETH_ALEN);
	c->port_state = b[46];
	c->active_mtu = b[47];
	for (i = 0; i < ARRAY_SIZE(limits); i++)
		*limits[i] = get_unaligned_le32(b + 48 + 4 * i);
	c->max_mr_size = get_unaligned_le64(b + 96);
	c->max_qp_rd_atom = b[104];
	c->max_qp_init_rd_atom = b[105];
	c->page_size_cap = get_unaligned_le64(b + 112);
	c->cqe_size = get_unaligned_le32(b + 120);
	c->device_features = get_unaligned_le32(b + 124);
out:
	kfree(b);
	return err;
}

static int vhca_add_event_buf(struct vhca_dev *d, u8 *buf, gfp_t gfp)
{
	struct scatterlist sg;

	sg_init_one(&sg, buf, VHCA_EVENT_SIZE);
	return virtqueue_add_inbuf(d->vqs[VHCA_VQ_EVENT], &sg, 1, buf, gfp);
}

/* Step 1 dispatches nothing yet: it counts the events and gives the buffers back. */
void vhca_event_callback(struct virtqueue *vq)
{
	struct vhca_dev *d = vq->vdev->priv;
	unsigned long flags;
	unsigned int len;
	u8 *buf;

	spin_lock_irqsave(&d->event_lock, flags);
	while ((buf = virtqueue_get_buf(vq, &len))) {
		d->events_seen++;
		if (len >= VHCA_EVENT_SIZE)
			dev_dbg(&d->vdev->dev, "event kind %u code %u handle %u\n", buf[0], buf[1],
				get_unaligned_le32(buf + 4));
		memset(buf, 0, VHCA_EVENT_SIZE);
		if (vhca_add_event_buf(d, buf, GFP_ATOMIC))
			dev_warn_ratelimited(&d->vdev->dev, "cannot repost an event buffer\n");
	}
	virtqueue_kick(vq);
	spin_unlock_irqrestore(&d->event_lock, flags);
}

int vhca_post_events(struct vhca_dev *d)
{
	unsigned long flags;
	int i, err = 0;

	spin_lock_irqsave(&d->event_lock, flags);
	for (i = 0; i < VHCA_EVENT_BUFS && !err; i++)
		err = vhca_add_event_buf(d, d->event_bufs + i * VHCA_EVENT_SIZE, GFP_ATOMIC);
	virtqueue_kick(d->vqs[VHCA_VQ_EVENT]);
	spin_unlock_irqrestore(&d->event_lock, flags);
	return err;
}
