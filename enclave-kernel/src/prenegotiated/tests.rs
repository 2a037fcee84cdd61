use alloc::vec::Vec;

use virtio_drivers::transport::Transport;

use super::*;

bitflags::bitflags! {
    /// The features virtio-drivers' vsock driver asks for (its private `SUPPORTED_FEATURES`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Features: u64 {
        const VERSION_1 = abi::VIRTIO_F_VERSION_1;
        const RING_EVENT_IDX = 1 << 29;
        const RING_INDIRECT_DESC = 1 << 28;
    }
}

#[derive(Debug, Default)]
struct Fake {
    accesses: Vec<(usize, Option<u32>)>,
    interrupt_status: u32,
}

impl Registers for &mut Fake {
    fn read(&mut self, offset: usize) -> u32 {
        self.accesses.push((offset, None));
        if offset == INTERRUPT_STATUS {
            self.interrupt_status
        } else {
            0
        }
    }
    fn write(&mut self, offset: usize, value: u32) {
        self.accesses.push((offset, Some(value)));
    }
}

fn preset() -> VsockPreset {
    VsockPreset::agreed(abi::VIRTIO_F_VERSION_1, abi::GUEST_CID)
}

/// What `VirtIOSocket::new` does with its transport, step by step (virtio-drivers 0.13), with
/// the queue addresses `queue_at` gives.
fn driver_setup<R: Registers>(t: &mut PreNegotiated<R>, queue_at: impl Fn(usize) -> abi::PresetQueue) -> u64 {
    let features = t.begin_init(Features::all());
    let cid = t
        .read_consistent(|| {
            Ok(u64::from(t.read_config_space::<u32>(0)?) | (u64::from(t.read_config_space::<u32>(4)?) << 32))
        })
        .unwrap();
    for i in 0..abi::VSOCK_QUEUES as u16 {
        assert!(!t.queue_used(i));
        assert!(t.max_queue_size(i) >= 8);
        let q = queue_at(usize::from(i));
        t.queue_set(i, q.size as u32, q.desc, q.driver, q.device);
    }
    t.finish_init();
    t.notify(0);
    assert_eq!(features.bits(), abi::VIRTIO_F_VERSION_1);
    cid
}

#[test]
fn the_driver_setup_touches_no_register_but_the_doorbell() {
    let mut regs = Fake::default();
    let mut t = PreNegotiated::new(&mut regs, preset()).unwrap();
    assert_eq!(t.device_type(), virtio_drivers::transport::DeviceType::Socket);
    assert_eq!(driver_setup(&mut t, abi::vsock_preset_queue), abi::GUEST_CID);
    assert!(t.get_status().contains(DeviceStatus::DRIVER_OK));
    assert!(t.queue_used(2) && !t.queue_used(3) && !t.queue_used(200));
    assert_eq!(t.max_queue_size(3), 0);
    assert_eq!(t.read_config_space::<u32>(6), Err(Error::ConfigSpaceTooSmall));
    assert_eq!(t.read_config_space::<u64>(usize::MAX), Err(Error::ConfigSpaceTooSmall));
    assert_eq!(t.write_config_space(0, 5u32), Err(Error::Unsupported));
    assert_eq!(regs.accesses, [(QUEUE_NOTIFY, Some(0))]);
}

#[test]
fn unsetting_the_queues_resets_the_device_once_and_acks_read_the_registers() {
    let mut regs = Fake {
        interrupt_status: 1,
        ..Fake::default()
    };
    let mut t = PreNegotiated::new(&mut regs, preset()).unwrap();
    driver_setup(&mut t, abi::vsock_preset_queue);
    assert!(t.ack_interrupt() == InterruptStatus::QUEUE_INTERRUPT);
    for q in 0..3 {
        t.queue_unset(q);
    }
    assert!(!t.queue_used(0));
    assert_eq!(
        regs.accesses,
        [
            (QUEUE_NOTIFY, Some(0)),
            (INTERRUPT_STATUS, None),
            (INTERRUPT_ACK, Some(1)),
            (STATUS, Some(0))
        ]
    );
}

#[test]
#[should_panic(expected = "sets queue 1")]
fn a_driver_asking_other_queue_addresses_fails_at_boot() {
    let mut regs = Fake::default();
    let mut t = PreNegotiated::new(&mut regs, preset()).unwrap();
    driver_setup(&mut t, |i| {
        let mut q = abi::vsock_preset_queue(i);
        if i == 1 {
            // As if something else had taken a DMA page first.
            q.desc += abi::PAGE_SIZE;
        }
        q
    });
}

#[test]
#[should_panic(expected = "sets queue 0")]
fn a_driver_asking_another_queue_size_fails_at_boot() {
    let mut regs = Fake::default();
    let mut t = PreNegotiated::new(&mut regs, preset()).unwrap();
    driver_setup(&mut t, |i| abi::PresetQueue {
        size: 16,
        ..abi::vsock_preset_queue(i)
    });
}

#[test]
#[should_panic(expected = "accepts features")]
fn a_driver_accepting_other_features_fails_at_boot() {
    let mut regs = Fake::default();
    let mut t = PreNegotiated::new(&mut regs, preset()).unwrap();
    t.set_status(DeviceStatus::empty());
    t.set_status(ACK_DRIVER);
    t.write_driver_features(abi::VIRTIO_F_VERSION_1 | (1 << 29));
}

#[test]
#[should_panic(expected = "sets DRIVER_OK")]
fn driver_ok_before_every_queue_is_set_fails_at_boot() {
    let mut regs = Fake::default();
    let mut t = PreNegotiated::new(&mut regs, preset()).unwrap();
    t.begin_init(Features::all());
    let q = abi::vsock_preset_queue(0);
    t.queue_set(0, 8, q.desc, q.driver, q.device);
    t.finish_init();
}

#[test]
#[should_panic(expected = "sets status")]
fn a_second_initialisation_fails_at_boot() {
    let mut regs = Fake::default();
    let mut t = PreNegotiated::new(&mut regs, preset()).unwrap();
    driver_setup(&mut t, abi::vsock_preset_queue);
    t.begin_init(Features::all());
}

#[test]
fn a_hostile_preset_is_refused_before_the_driver_runs() {
    let mut regs = Fake::default();
    let refused = |p: VsockPreset| check_preset(&p).unwrap_err();
    let good = preset();
    assert_eq!(check_preset(&good), Ok(()));
    assert_eq!(
        check_preset(&VsockPreset::agreed(abi::VSOCK_DRIVER_FEATURES, 42)),
        Ok(()),
        "every feature the driver accepts"
    );
    assert_eq!(refused(VsockPreset::default()), PresetError::Features(0), "no device");
    for features in [0, 1 << 29, abi::VIRTIO_F_VERSION_1 | 1] {
        assert_eq!(
            refused(VsockPreset { features, ..good }),
            PresetError::Features(features)
        );
    }
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        assert_eq!(
            refused(VsockPreset { guest_cid: cid, ..good }),
            PresetError::GuestCid(cid)
        );
    }
    let mut outside = good;
    outside.queues[2].device = abi::HEAP_GPA;
    assert_eq!(refused(outside), PresetError::Queue(2));
    let mut bigger = good;
    bigger.queues[0].size = 256;
    assert_eq!(refused(bigger), PresetError::Queue(0));
    assert_eq!(refused(VsockPreset { queue_size: 9, ..good }), PresetError::Queue(0));
    assert!(PreNegotiated::new(&mut regs, outside).is_err());
    assert!(regs.accesses.is_empty());
}
