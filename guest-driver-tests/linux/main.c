// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * vhca_rdma: binds a vhca VF's virtio device (ID 42; or the ID QEMU's attach-only model
 * presents, attach_id=38; or QEMU's vhost-user-fs carrier, ID 26, with carrier=1), reads its
 * identity with QUERY_DEVICE and registers an ib_device for it (ib.c).
 *
 * It refuses to load beside rdma_rxe and refuses rdma_rxe while it is loaded: the device claims
 * rxe's driver id for Debian's rxe provider, and rxe casts every ib_device with that id that it
 * finds through a netdev to its own struct (docs/guest-stack.md §1.4).
 */
#include <linux/dma-mapping.h>
#include <linux/module.h>
#include <linux/namei.h>
#include <linux/slab.h>
#include <linux/version.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vhca_rdma.h"


#define VHCA_VIRTIO_ID_FS 26 /* the carrier: QEMU's vhost-user-fs-pci (docs/qemu.md) */

static unsigned int attach_id = VHCA_VIRTIO_ID_RDMA;
module_param(attach_id, uint, 0444);
MODULE_PARM_DESC(attach_id, "virtio device ID of the VF (42; 38 under stock QEMU's vhost-user-test-device-pci)");
static bool carrier;
module_param(carrier, bool, 0444);
MODULE_PARM_DESC(carrier, "also bind virtio ID 26, QEMU's vhost-user-fs carrier (virtio_fs must not be loaded)");

/* Only ID 42 for module autoloading: 26 is virtio-fs, 38 another device, both by parameter. */
static const struct virtio_device_id vhca_autoload_ids[] = {
	{ VHCA_VIRTIO_ID_RDMA, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, vhca_autoload_ids);
static struct virtio_device_id vhca_ids[3];

/*
 * The device takes guest-physical addresses. Without VIRTIO_F_ACCESS_PLATFORM and without an
 * IOMMU, DMA addresses of the PCI device are physical addresses; check it rather than assume.
 */
static int vhca_check_dma(struct virtio_device *vdev)
{
	struct device *dma = vdev->dev.parent;
	dma_addr_t addr;
	void *buf;
	bool same;

	if (virtio_has_feature(vdev, VIRTIO_F_ACCESS_PLATFORM)) {
		dev_err(&vdev->dev, "VIRTIO_F_ACCESS_PLATFORM: the device needs guest-physical addresses\n");
		return -EOPNOTSUPP;
	}
	buf = kmalloc(64, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	addr = dma_map_single(dma, buf, 64, DMA_BIDIRECTIONAL);
	if (dma_mapping_error(dma, addr)) {
		kfree(buf);
		return -EIO;
	}
	same = addr == virt_to_phys(buf);
	dma_unmap_single(dma, addr, 64, DMA_BIDIRECTIONAL);
	kfree(buf);
	if (!same) {
		dev_err(&vdev->dev, "DMA addresses are not guest-physical (an IOMMU?): unsupported\n");
		return -EOPNOTSUPP;
	}
	return 0;
}

static int vhca_find_vqs(struct vhca_dev *d)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	struct virtqueue_info info[VHCA_NUM_VQS] = {
		[VHCA_VQ_CONTROL] = { "control", vhca_cmd_callback },
		[VHCA_VQ_DOORBELL] = { "doorbell", NULL },
		[VHCA_VQ_EVENT] = { "event", vhca_event_callback },
	};

	return virtio_find_vqs(d->vdev, VHCA_NUM_VQS, d->vqs, info, NULL);
#else
	vq_callback_t *cbs[VHCA_NUM_VQS] = { vhca_cmd_callback, NULL, vhca_event_callback };
	static const char *const names[VHCA_NUM_VQS] = { "control", "doorbell", "event" };

	return virtio_find_vqs(d->vdev, VHCA_NUM_VQS, d->vqs, cbs, names, NULL);
#endif
}

/* Stops the device (a virtio reset), then frees what it may have been using. */
static void vhca_stop(struct vhca_dev *d)
{
	virtio_reset_device(d->vdev);
	d->vdev->config->del_vqs(d->vdev);
	kfree(d->lost_req);
	kfree(d->lost_resp);
	kfree(d->event_bufs);
}

static int vhca_probe(struct virtio_device *vdev)
{
	struct vhca_dev *d;
	int err;

	d = ib_alloc_device(vhca_dev, ib);
	if (!d)
		return -ENOMEM;
	d->vdev = vdev;
	vdev->priv = d;
	mutex_init(&d->cmd_lock);
	init_completion(&d->cmd_done);
	spin_lock_init(&d->cmd_vq_lock);
	spin_lock_init(&d->event_lock);

	err = vhca_check_dma(vdev);
	if (err)
		goto dealloc;
	d->event_bufs = kcalloc(VHCA_EVENT_BUFS, VHCA_EVENT_SIZE, GFP_KERNEL);
	if (!d->event_bufs) {
		err = -ENOMEM;
		goto dealloc;
	}
	err = vhca_find_vqs(d);
	if (err) {
		kfree(d->event_bufs);
		goto dealloc;
	}
	virtio_device_ready(vdev);
	err = vhca_post_events(d);
	if (err)
		goto stop;
	err = vhca_cmd_query_device(d);
	if (err) {
		dev_err(&vdev->dev, "QUERY_DEVICE failed: %d\n", err);
		goto stop;
	}
	err = vhca_ib_register(d);
	if (err)
		goto stop;
	return 0;
stop:
	vhca_stop(d);
dealloc:
	ib_dealloc_device(&d->ib);
	return err;
}

static void vhca_remove(struct virtio_device *vdev)
{
	struct vhca_dev *d = vdev->priv;

	vhca_ib_unregister(d);
	vhca_stop(d);
	dev_info(&vdev->dev, "reset; %llu events seen\n", d->events_seen);
	ib_dealloc_device(&d->ib);
}

static struct virtio_driver vhca_driver = {
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = vhca_ids,
	.probe = vhca_probe,
	.remove = vhca_remove,
};

/* rdma_rxe loaded after us: refuse it while it is coming (its init has not run yet). */
static int vhca_module_event(struct notifier_block *nb, unsigned long state, void *data)
{
	struct module *mod = data;

	if (state != MODULE_STATE_COMING || strcmp(mod->name, "rdma_rxe"))
		return NOTIFY_DONE;
	pr_err("vhca_rdma: refusing rdma_rxe: it would take vhca devices (rxe driver id) for its own\n");
	return notifier_from_errno(-EBUSY);
}

static struct notifier_block vhca_module_nb = { .notifier_call = vhca_module_event };

/* rdma_rxe loaded before us: its module directory is there (sysfs, as the init mounts it). */
static bool vhca_rxe_loaded(void)
{
	struct path path;

	if (kern_path("/sys/module/rdma_rxe", LOOKUP_FOLLOW, &path))
		return false;
	path_put(&path);
	return true;
}

static int __init vhca_init(void)
{
	int err;

	err = register_module_notifier(&vhca_module_nb);
	if (err)
		return err;
	if (vhca_rxe_loaded()) {
		pr_err("vhca_rdma: rdma_rxe is loaded; unload it first (docs/guest-stack.md §1.4)\n");
		err = -EBUSY;
		goto unreg_nb;
	}
	vhca_ids[0].device = attach_id;
	vhca_ids[0].vendor = VIRTIO_DEV_ANY_ID;
	if (carrier) {
		vhca_ids[1].device = VHCA_VIRTIO_ID_FS;
		vhca_ids[1].vendor = VIRTIO_DEV_ANY_ID;
	}
	err = register_virtio_driver(&vhca_driver);
	if (err)
		goto unreg_nb;
	return 0;
unreg_nb:
	unregister_module_notifier(&vhca_module_nb);
	return err;
}

static void __exit vhca_exit(void)
{
	unregister_virtio_driver(&vhca_driver);
	unregister_module_notifier(&vhca_module_nb);
}

module_init(vhca_init);
module_exit(vhca_exit);
MODULE_DESCRIPTION("vhca VF: RDMA device over virtio (user-space RoCEv2 HCA)");
MODULE_LICENSE("Dual MIT/GPL");
