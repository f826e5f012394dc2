// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The ib_device of a VF and the netdev it is bound to (docs/guest-stack.md §4.2 step 2).
 *
 * The device claims rxe's driver id and uverbs ABI 2, so Debian's rxe provider binds it (§1).
 * RoCE GIDs come from ib_core's GID management of the bound netdev: the netdev carries the VF's
 * MAC, and the image gives it the VF's IPv4 address (exported here as vf_ipv4), so GID 1 is
 * ::ffff:IP, RoCE v2. The netdev carries no traffic (IFF_NOARP, transmit drops): RoCE moves
 * through the device, never through the guest's stack.
 *
 * Verbs beyond what ibv_devinfo needs are later steps; ib_core insists on them being present,
 * so they answer -EOPNOTSUPP for now.
 */
#include <linux/etherdevice.h>
#include <linux/netdevice.h>
#include <linux/pci_ids.h>
#include <linux/version.h>
#include <net/addrconf.h>
#include <rdma/ib_mad.h>
#include <rdma/ib_verbs.h>

#include "vhca_rdma.h"

#define VHCA_GID_TBL_LEN 16

struct vhca_ucontext { struct ib_ucontext ibuc; };
struct vhca_pd { struct ib_pd ibpd; };
struct vhca_cq { struct ib_cq ibcq; };
struct vhca_qp { struct ib_qp ibqp; };

static struct vhca_dev *to_vdev(struct ib_device *ib)
{
	return container_of(ib, struct vhca_dev, ib);
}

static int clamp_int(u32 v)
{
	return min_t(u32, v, INT_MAX);
}

static int vhca_query_device(struct ib_device *ib, struct ib_device_attr *a, struct ib_udata *uhw)
{
	const struct vhca_config *c = &to_vdev(ib)->cfg;

	if (uhw && (uhw->inlen || uhw->outlen))
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	a->vendor_id = PCI_VENDOR_ID_REDHAT_QUMRANET;
	a->vendor_part_id = VHCA_VIRTIO_ID_RDMA;
	a->sys_image_guid = cpu_to_be64(c->node_guid);
	a->max_mr_size = c->max_mr_size;
	a->page_size_cap = c->page_size_cap;
	a->max_qp = clamp_int(c->max_qp);
	a->max_qp_wr = clamp_int(c->max_qp_wr);
	a->max_send_sge = clamp_int(c->max_sge);
	a->max_recv_sge = clamp_int(c->max_sge);
	a->max_sge_rd = clamp_int(c->max_sge);
	a->max_cq = clamp_int(c->max_cq);
	a->max_cqe = clamp_int(c->max_cqe);
	a->max_mr = clamp_int(c->max_mr);
	a->max_pd = clamp_int(c->max_pd);
	a->max_qp_rd_atom = c->max_qp_rd_atom;
	a->max_qp_init_rd_atom = c->max_qp_init_rd_atom;
	a->max_res_rd_atom = clamp_int(min_t(u64, (u64)c->max_qp_rd_atom * c->max_qp, U32_MAX));
	a->atomic_cap = IB_ATOMIC_HCA;
	a->max_ah = clamp_int(c->max_ah);
	a->max_srq = clamp_int(c->max_srq);
	a->max_srq_wr = clamp_int(c->max_srq_wr);
	a->max_srq_sge = clamp_int(c->max_sge);
	a->max_pkeys = 1;
	return 0;
}

static int vhca_query_port(struct ib_device *ib, u32 port, struct ib_port_attr *a)
{
	const struct vhca_config *c = &to_vdev(ib)->cfg;
	bool active = c->port_state == IB_PORT_ACTIVE;

	/* ib_query_port() zeroed *a. */
	a->state = active ? IB_PORT_ACTIVE : IB_PORT_DOWN;
	a->phys_state = active ? IB_PORT_PHYS_STATE_LINK_UP : IB_PORT_PHYS_STATE_DISABLED;
	a->max_mtu = IB_MTU_4096;
	a->active_mtu = c->active_mtu >= IB_MTU_256 && c->active_mtu <= IB_MTU_4096 ?
				c->active_mtu : IB_MTU_1024;
	a->gid_tbl_len = VHCA_GID_TBL_LEN;
	a->pkey_tbl_len = 1;
	a->max_msg_sz = c->max_msg_sz;
	a->port_cap_flags = IB_PORT_CM_SUP;
	a->active_width = IB_WIDTH_1X;
	a->active_speed = IB_SPEED_SDR;
	return 0;
}

static int vhca_port_immutable(struct ib_device *ib, u32 port, struct ib_port_immutable *im)
{
	struct ib_port_attr a = {};
	int err = ib_query_port(ib, port, &a);

	if (err)
		return err;
	im->core_cap_flags = RDMA_CORE_PORT_IBA_ROCE_UDP_ENCAP; /* RoCE v2 GIDs only */
	im->pkey_tbl_len = a.pkey_tbl_len;
	im->gid_tbl_len = a.gid_tbl_len;
	im->max_mad_size = IB_MGMT_MAD_SIZE;
	return 0;
}

static enum rdma_link_layer vhca_link_layer(struct ib_device *ib, u32 port)
{
	return IB_LINK_LAYER_ETHERNET;
}

static int vhca_query_pkey(struct ib_device *ib, u32 port, u16 index, u16 *pkey)
{
	if (index)
		return -EINVAL;
	*pkey = 0xffff;
	return 0;
}

static int vhca_alloc_ucontext(struct ib_ucontext *uc, struct ib_udata *udata)
{
	return 0;
}

static void vhca_dealloc_ucontext(struct ib_ucontext *uc)
{
}

/* Later steps (docs/guest-stack.md §4.2, 3 to 8). */
static int vhca_alloc_pd(struct ib_pd *pd, struct ib_udata *u) { return -EOPNOTSUPP; }
static int vhca_dealloc_pd(struct ib_pd *pd, struct ib_udata *u) { return 0; }
static int vhca_create_qp(struct ib_qp *qp, struct ib_qp_init_attr *a, struct ib_udata *u)
{
	return -EOPNOTSUPP;
}
static int vhca_modify_qp(struct ib_qp *qp, struct ib_qp_attr *a, int mask, struct ib_udata *u)
{
	return -EOPNOTSUPP;
}
static int vhca_destroy_qp(struct ib_qp *qp, struct ib_udata *u) { return 0; }
static int vhca_post_send(struct ib_qp *qp, const struct ib_send_wr *wr,
			  const struct ib_send_wr **bad)
{
	*bad = wr;
	return -EOPNOTSUPP;
}
static int vhca_post_recv(struct ib_qp *qp, const struct ib_recv_wr *wr,
			  const struct ib_recv_wr **bad)
{
	*bad = wr;
	return -EOPNOTSUPP;
}
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
static int vhca_create_cq(struct ib_cq *cq, const struct ib_cq_init_attr *a,
			  struct uverbs_attr_bundle *attrs)
#else
static int vhca_create_cq(struct ib_cq *cq, const struct ib_cq_init_attr *a, struct ib_udata *u)
#endif
{
	return -EOPNOTSUPP;
}
static int vhca_destroy_cq(struct ib_cq *cq, struct ib_udata *u) { return 0; }
static int vhca_poll_cq(struct ib_cq *cq, int n, struct ib_wc *wc) { return 0; }
static int vhca_req_notify_cq(struct ib_cq *cq, enum ib_cq_notify_flags f) { return -EOPNOTSUPP; }
static struct ib_mr *vhca_get_dma_mr(struct ib_pd *pd, int access)
{
	return ERR_PTR(-EOPNOTSUPP);
}
static struct ib_mr *vhca_reg_user_mr(struct ib_pd *pd, u64 start, u64 len, u64 iova, int access,
				      struct ib_udata *u)
{
	return ERR_PTR(-EOPNOTSUPP);
}
static int vhca_dereg_mr(struct ib_mr *mr, struct ib_udata *u) { return 0; }

/* What the image needs to set the netdev up: the VF's IPv4 address (from its GID). */
static ssize_t vf_ipv4_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vhca_dev *d = rdma_device_to_drv_device(dev, struct vhca_dev, ib);

	return sysfs_emit(buf, "%pI4\n", &d->ipv4);
}
static DEVICE_ATTR_RO(vf_ipv4);

static ssize_t vf_netdev_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vhca_dev *d = rdma_device_to_drv_device(dev, struct vhca_dev, ib);

	return sysfs_emit(buf, "%s\n", netdev_name(d->ndev));
}
static DEVICE_ATTR_RO(vf_netdev);

static struct attribute *vhca_attrs[] = { &dev_attr_vf_ipv4.attr, &dev_attr_vf_netdev.attr, NULL };
static const struct attribute_group vhca_attr_group = { .attrs = vhca_attrs };

static const struct ib_device_ops vhca_ib_ops = {
	.owner = THIS_MODULE,
	.driver_id = RDMA_DRIVER_RXE,
	.uverbs_abi_ver = 2, /* RXE_UVERBS_ABI_VERSION */
	.device_group = &vhca_attr_group,

	.query_device = vhca_query_device,
	.query_port = vhca_query_port,
	.get_port_immutable = vhca_port_immutable,
	.get_link_layer = vhca_link_layer,
	.query_pkey = vhca_query_pkey,
	.alloc_ucontext = vhca_alloc_ucontext,
	.dealloc_ucontext = vhca_dealloc_ucontext,
	.alloc_pd = vhca_alloc_pd,
	.dealloc_pd = vhca_dealloc_pd,
	.create_qp = vhca_create_qp,
	.modify_qp = vhca_modify_qp,
	.destroy_qp = vhca_destroy_qp,
	.post_send = vhca_post_send,
	.post_recv = vhca_post_recv,
	.create_cq = vhca_create_cq,
	.destroy_cq = vhca_destroy_cq,
	.poll_cq = vhca_poll_cq,
	.req_notify_cq = vhca_req_notify_cq,
	.get_dma_mr = vhca_get_dma_mr,
	.reg_user_mr = vhca_reg_user_mr,
	.dereg_mr = vhca_dereg_mr,

	INIT_RDMA_OBJ_SIZE(ib_ucontext, vhca_ucontext, ibuc),
	INIT_RDMA_OBJ_SIZE(ib_pd, vhca_pd, ibpd),
	INIT_RDMA_OBJ_SIZE(ib_cq, vhca_cq, ibcq),
	INIT_RDMA_OBJ_SIZE(ib_qp, vhca_qp, ibqp),
};

static netdev_tx_t vhca_xmit(struct sk_buff *skb, struct net_device *ndev)
{
	ndev->stats.tx_dropped++;
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

static const struct net_device_ops vhca_netdev_ops = { .ndo_start_xmit = vhca_xmit };

/* The device's GID must be IPv4-mapped (::ffff:a.b.c.d): RoCE v2 over IPv4, as vhca serves. */
static int vhca_gid_ipv4(struct vhca_dev *d)
{
	static const u8 prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (memcmp(d->cfg.gid, prefix, sizeof(prefix))) {
		dev_err(&d->vdev->dev, "GID %pI6c is not IPv4-mapped: unsupported\n", d->cfg.gid);
		return -EOPNOTSUPP;
	}
	memcpy(&d->ipv4, d->cfg.gid + 12, 4);
	return 0;
}

int vhca_ib_register(struct vhca_dev *d)
{
	struct net_device *ndev;
	int err;

	err = vhca_gid_ipv4(d);
	if (err)
		return err;
	if (!is_valid_ether_addr(d->cfg.mac)) {
		dev_err(&d->vdev->dev, "MAC %pM is not a unicast address\n", d->cfg.mac);
		return -EINVAL;
	}
	ndev = alloc_etherdev(0);
	if (!ndev)
		return -ENOMEM;
	strscpy(ndev->name, "vhcaeth%d", IFNAMSIZ);
	ndev->netdev_ops = &vhca_netdev_ops;
	ndev->flags |= IFF_NOARP;
	eth_hw_addr_set(ndev, d->cfg.mac);
	SET_NETDEV_DEV(ndev, &d->vdev->dev);
	err = register_netdev(ndev);
	if (err)
		goto free_nd;
	d->ndev = ndev;

	d->ib.node_type = RDMA_NODE_IB_CA;
	d->ib.phys_port_cnt = 1;
	d->ib.num_comp_vectors = 1;
	d->ib.node_guid = cpu_to_be64(d->cfg.node_guid);
	strscpy(d->ib.node_desc, "vhca VF", sizeof(d->ib.node_desc));
	/* The rxe provider's send kick and CQ arming are write() commands (§1.3). */
	d->ib.uverbs_cmd_mask |= BIT_ULL(IB_USER_VERBS_CMD_POST_SEND) |
				 BIT_ULL(IB_USER_VERBS_CMD_REQ_NOTIFY_CQ);
	ib_set_device_ops(&d->ib, &vhca_ib_ops);
	err = ib_device_set_netdev(&d->ib, ndev, 1);
	if (err)
		goto unreg_nd;
	/* The PCI function as DMA device: umem DMA addresses are then guest-physical. */
	err = ib_register_device(&d->ib, "vhca%d", d->vdev->dev.parent);
	if (err)
		goto unreg_nd;
	dev_info(&d->vdev->dev, "%s on %s: mac %pM ip %pI4 gid %pI6c node_guid %016llx mtu %u\n",
		 dev_name(&d->ib.dev), netdev_name(ndev), d->cfg.mac, &d->ipv4, d->cfg.gid,
		 d->cfg.node_guid, d->cfg.active_mtu);
	return 0;
unreg_nd:
	ib_device_set_netdev(&d->ib, NULL, 1);
	unregister_netdev(ndev);
	d->ndev = NULL;
free_nd:
	free_netdev(ndev);
	return err;
}

void vhca_ib_unregister(struct vhca_dev *d)
{
	ib_unregister_device(&d->ib);
	unregister_netdev(d->ndev);
	free_netdev(d->ndev);
	d->ndev = NULL;
}
