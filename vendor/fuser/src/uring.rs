//! FUSE-over-io_uring (Linux 6.14+, the `fuse` module's `enable_uring`): strata's
//! addition to the vendored fuser (see `vendor/README.md` in strata).
//!
//! With `FUSE_OVER_IO_URING` negotiated at INIT, the kernel puts each request on the ring
//! queue of the CPU its caller runs on. Here [`QUEUE_THREADS`] threads per CPU, pinned to
//! it, each own an io_uring whose entry is registered with that queue: a request arrives as a
//! completion, and its answer and the wait for the next request are one submission
//! (`COMMIT_AND_FETCH`). Served on its caller's CPU, a request needs no cross-CPU
//! wake-up, the cost that dominates the read/write transport on hosts whose CPUs sit
//! idle between requests (on a VM, each one is a halted vCPU to wake).
//!
//! Forgets and interrupts still come through `/dev/fuse`, as do requests sent before
//! every queue has an entry, so the classic threads keep running alongside.

use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::error;
use log::warn;
use parking_lot::Condvar;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::channel::ChannelSender;
use crate::dev_fuse::DevFuse;
use crate::ll::Operation;
use crate::reply::ReplyEmpty;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// `fuse_in_header`.
const IN_HEADER: usize = 40;
/// `fuse_out_header`.
const OUT_HEADER: usize = 16;
/// Where `fuse_uring_req_header` keeps the per-op header, and its size.
const OP_IN: usize = 128;
const OP_IN_SIZE: usize = 128;
/// `fuse_uring_ent_in_out`: flags, commit_id, payload_sz, padding, reserved.
const ENT_IN_OUT: usize = 256;
const COMMIT_ID: usize = ENT_IN_OUT + 8;
const PAYLOAD_SZ: usize = ENT_IN_OUT + 16;
/// `sizeof(struct fuse_uring_req_header)`.
const RING_HEADER: usize = ENT_IN_OUT + 32;

/// `enum fuse_uring_cmd`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// Threads per CPU queue, each with one ring entry: a CPU's second request (readahead's
/// next chunk, another process's call) is served while the first waits on the disk.
pub(crate) const QUEUE_THREADS: usize = 2;
const DEPTH: usize = 1;

/// Where the answer to one ring request goes: straight into its entry's buffers (the
/// one copy `writev` would make), from whichever thread replies.
#[derive(Debug)]
pub(crate) struct RingAnswer {
    header: *mut u8,
    payload: *mut u8,
    payload_len: usize,
    /// `Some` once answered: the body's length, or `None` for an answer too big to fit.
    answered: Mutex<Option<Option<usize>>>,
    ready: Condvar,
}

// SAFETY: the pointers are written by the one `send` of the request (`answered` keeps any
// other out) while the ring thread waits in `take` and touches neither buffer.
unsafe impl Send for RingAnswer {}
unsafe impl Sync for RingAnswer {}

impl RingAnswer {
    fn new(entry: &mut Entry) -> RingAnswer {
        RingAnswer {
            header: entry.header.as_mut_ptr(),
            payload: entry.payload.as_mut_ptr(),
            payload_len: entry.payload.len(),
            answered: Mutex::new(None),
            ready: Condvar::new(),
        }
    }

    pub(crate) fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let mut answered = self.answered.lock();
        if answered.is_some() {
            return Err(io::Error::other("a FUSE request answered twice"));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let fits = total >= OUT_HEADER && total - OUT_HEADER <= self.payload_len;
        if fits {
            let mut at = 0;
            for b in bufs {
                let mut bytes: &[u8] = b;
                while !bytes.is_empty() {
                    // SAFETY: `at` < OUT_HEADER addresses the header's first 16 bytes, and
                    // `at - OUT_HEADER` < `payload_len` (checked above) the payload.
                    let n = if at < OUT_HEADER {
                        let n = bytes.len().min(OUT_HEADER - at);
                        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.header.add(at), n) };
                        n
                    } else {
                        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.payload.add(at - OUT_HEADER), bytes.len()) };
                        bytes.len()
                    };
                    bytes = &bytes[n..];
                    at += n;
                }
            }
        }
        *answered = Some(fits.then(|| total - OUT_HEADER));
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for the answer (a filesystem may reply from another thread, later): the
    /// body's length, or `None` if it did not fit.
    fn take(&self) -> Option<usize> {
        let mut answered = self.answered.lock();
        loop {
            if let Some(body) = *answered {
                return body;
            }
            self.ready.wait(&mut answered);
        }
    }
}

/// The CPUs the kernel makes queues for (`num_possible_cpus`): one per id in
/// `/sys/devices/system/cpu/possible` ("0-3", "0,2-5").
pub(crate) fn possible_cpus() -> io::Result<Vec<usize>> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(&list)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cpu list {list:?}")))
}

/// Parses the kernel's cpu list format ("0-3,8,10-11\n").
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
        if last < first {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus)
}

/// The payload buffer the kernel requires of each entry (`ring->max_payload_sz`).
pub(crate) fn payload_size(max_write: u32, max_pages: u16) -> usize {
    let page = page_size::get();
    8192.max(max_write as usize).max(usize::from(max_pages) * page)
}

/// One ring entry's buffers. The kernel writes requests into them and reads answers
/// from them while a command is in flight, so they never move.
struct Entry {
    header: Box<[u8; RING_HEADER]>,
    payload: Box<[u8]>,
    iov: Box<[libc::iovec; 2]>,
}

impl Entry {
    fn new(payload_size: usize) -> Entry {
        let mut header = Box::new([0u8; RING_HEADER]);
        // Zeroed pages are mapped lazily: only what requests touch becomes resident.
        let mut payload = vec![0u8; payload_size].into_boxed_slice();
        let iov = Box::new([
            libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: RING_HEADER },
            libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload_size },
        ]);
        Entry { header, payload, iov }
    }

    fn u32_at(&self, at: usize) -> usize {
        u32::from_le_bytes(self.header[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.header[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The request as the read transport delivers it: in-header, per-op header, the rest.
    fn request_into(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let total = self.u32_at(0);
        let payload = self.u32_at(PAYLOAD_SZ);
        let op = total.checked_sub(IN_HEADER + payload).filter(|&op| op <= OP_IN_SIZE && payload <= self.payload.len());
        let Some(op) = op else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ring request of {total} bytes with a {payload}-byte payload"),
            ));
        };
        buf.clear();
        buf.extend_from_slice(&self.header[..IN_HEADER]);
        buf.extend_from_slice(&self.header[OP_IN..OP_IN + op]);
        buf.extend_from_slice(&self.payload[..payload]);
        Ok(())
    }

    /// Records the answer `RingAnswer::send` wrote in place (`None`: it did not fit).
    fn answered(&mut self, body: Option<usize>) {
        let Some(body) = body else {
            // Cannot happen for answers fuser builds; fail the request, not the queue.
            error!("a FUSE answer did not fit its ring entry");
            return self.fail(-libc::EIO);
        };
        self.header[PAYLOAD_SZ..PAYLOAD_SZ + 4].copy_from_slice(&(body as u32).to_le_bytes());
    }

    /// Answers the request in the entry with just `error` (0: success, no body).
    fn fail(&mut self, error: i32) {
        let unique = self.u64_at(8);
        self.header[..OUT_HEADER].copy_from_slice(&out_header(OUT_HEADER, error, unique));
        self.header[PAYLOAD_SZ..PAYLOAD_SZ + 4].copy_from_slice(&0u32.to_le_bytes());
    }
}

fn out_header(len: usize, error: i32, unique: u64) -> [u8; OUT_HEADER] {
    let mut h = [0; OUT_HEADER];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&error.to_le_bytes());
    h[8..16].copy_from_slice(&unique.to_le_bytes());
    h
}

/// A `FUSE_IO_URING_CMD_*` for entry `tag` of queue `qid`.
fn command(dev: &DevFuse, cmd_op: u32, qid: u16, commit_id: u64, entry: &mut Entry, tag: usize) -> squeue::Entry128 {
    // `struct fuse_uring_cmd_req` in the command area: flags, commit_id, qid.
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_le_bytes());
    cmd[16..18].copy_from_slice(&qid.to_le_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), cmd_op)
        .cmd(cmd)
        .addr(Some(entry.iov.as_mut_ptr() as u64))
        .build()
        .user_data(tag as u64);
    // io-uring 0.7 has no setter for `len`, which FUSE reads as the iovec count (2).
    // SAFETY: `Entry128` is `io_uring_sqe` followed by 64 command bytes (repr(C), 128
    // bytes), and `len` is the u32 at offset 24 of `io_uring_sqe`.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&2u32.to_le_bytes());
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// Pins the calling thread to `cpu`; a CPU that is offline now leaves it unpinned.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for
    // cpu < CPU_SETSIZE, checked first.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                warn!("FUSE ring queue {cpu}: CPU offline, serving it unpinned");
            }
        }
    }
}

/// Answers the request in `entry`, in place; true for DESTROY, the last one.
fn answer_one<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    dev: &Arc<DevFuse>,
    entry: &mut Entry,
    request: &mut Vec<u8>,
) -> io::Result<bool> {
    entry.request_into(request)?;
    let answer = Arc::new(RingAnswer::new(entry));
    let Some(req) = RequestWithSender::new(ChannelSender::ring(dev, &answer), request) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "invalid request"));
    };
    let op = req.request.operation();
    let destroy = matches!(op, Ok(Operation::Destroy(_)));
    // The kernel sends these through /dev/fuse, never the ring; they take no answer.
    let unanswered = matches!(op, Ok(Operation::Forget(_) | Operation::BatchForget(_) | Operation::Interrupt(_)));
    if destroy {
        req.reply::<ReplyEmpty>().ok();
    } else {
        req.dispatch(se);
    }
    if unanswered {
        entry.fail(0);
    } else {
        let body = answer.take();
        entry.answered(body);
    }
    Ok(destroy)
}

/// Serves queue `qid` (the CPU of that id) until the filesystem is unmounted.
pub(crate) fn serve_queue<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    dev: &Arc<DevFuse>,
    qid: u16,
    payload_size: usize,
) -> io::Result<()> {
    pin_to(usize::from(qid));
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder().build(2 * DEPTH as u32)?;
    let mut entries: Vec<Entry> = (0..DEPTH).map(|_| Entry::new(payload_size)).collect();
    let result = serve(se, dev, qid, &mut ring, &mut entries);
    // Commands still registered may be written to until the ring is gone; and the
    // kernel may finish tearing them down after that, so the buffers are left to the
    // process's end rather than freed under it (one queue's worth, once per mount).
    drop(ring);
    std::mem::forget(entries);
    result
}

fn serve<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    dev: &Arc<DevFuse>,
    qid: u16,
    ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
    entries: &mut [Entry],
) -> io::Result<()> {
    for (tag, entry) in entries.iter_mut().enumerate() {
        let sqe = command(dev, CMD_REGISTER, qid, 0, entry, tag);
        // SAFETY: the entry's buffers outlive the ring (see `serve_queue`).
        unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    let payload_size = entries.first().map_or(0, |e| e.payload.len());
    let mut request = Vec::with_capacity(IN_HEADER + OP_IN_SIZE + payload_size);
    let mut done = Vec::with_capacity(DEPTH);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data() as usize, c.result())));
        for &(tag, result) in &done {
            if result < 0 {
                return match -result {
                    // Unmounted: the kernel ended the queue's commands.
                    libc::ENOTCONN | libc::ECANCELED | libc::ENODEV => Ok(()),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                };
            }
            let entry = &mut entries[tag];
            // A request this side cannot read fails alone: the queue must keep serving its CPU.
            let destroy = match answer_one(se, dev, entry, &mut request) {
                Ok(destroy) => destroy,
                Err(e) => {
                    error!("FUSE ring queue {qid}: {e}");
                    entry.fail(-libc::EIO);
                    false
                }
            };
            let commit_id = entry.u64_at(COMMIT_ID);
            let sqe = command(dev, CMD_COMMIT_AND_FETCH, qid, commit_id, entry, tag);
            // SAFETY: as above.
            unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
            if destroy {
                ring.submit()?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_in_the_kernel_format() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-3\n"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0,2-5,7\n"), Some(vec![0, 2, 3, 4, 5, 7]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-x"), None);
    }
}
