//! Why a yardstick run failed.

use core::fmt;

use vireo_memory::MemoryError;
use vireo_queue::device::DeviceQueueError;
use vireo_queue::driver::DriverQueueError;

/// Why a yardstick run failed.
#[derive(Debug)]
pub enum YardstickError {
    /// The options are inconsistent (the message says which).
    Options(&'static str),
    /// Setting up or reaching guest memory through Vireo's view failed.
    Memory(MemoryError),
    /// vm-memory refused an access or the region set-up.
    VmMemory(vm_memory::GuestMemoryError),
    /// Creating the vm-memory region failed.
    VmMemoryRegion(vm_memory::mmap::Error),
    /// Vireo's driver side reported an error.
    Driver(DriverQueueError),
    /// Vireo's device side reported an error.
    Device(DeviceQueueError),
    /// rust-vmm's virtio-queue reported an error.
    RustVmm(virtio_queue::Error),
    /// A token came back twice, with a wrong length, or with wrong data.
    Verification(&'static str, u64),
    /// The other side stopped (after its own error).
    PeerStopped(&'static str),
    /// Creating an eventfd failed.
    EventFd(rustix::io::Errno),
    /// Starting the device thread failed.
    Spawn(std::io::Error),
    /// A thread panicked.
    ThreadPanicked,
}

impl fmt::Display for YardstickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YardstickError::Options(m) => write!(f, "invalid options: {m}"),
            YardstickError::Memory(e) => write!(f, "guest memory: {e}"),
            YardstickError::VmMemory(e) => write!(f, "vm-memory: {e}"),
            YardstickError::VmMemoryRegion(e) => write!(f, "vm-memory region: {e}"),
            YardstickError::Driver(e) => write!(f, "driver side: {e}"),
            YardstickError::Device(e) => write!(f, "Vireo device side: {e}"),
            YardstickError::RustVmm(e) => write!(f, "virtio-queue device side: {e}"),
            YardstickError::Verification(m, seq) => {
                write!(f, "verification failed: {m} (buffer {seq})")
            }
            YardstickError::PeerStopped(side) => write!(f, "the {side} side stopped"),
            YardstickError::EventFd(e) => write!(f, "creating an eventfd: {e}"),
            YardstickError::Spawn(e) => write!(f, "starting the device thread: {e}"),
            YardstickError::ThreadPanicked => write!(f, "a thread panicked"),
        }
    }
}

impl std::error::Error for YardstickError {}
