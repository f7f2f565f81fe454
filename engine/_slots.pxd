# A PacketBatch as raw pointers for nogil loops, and the receive-error counting, shared by
# the Cython I/O modules (engine/_netio.pyx, engine/_tun_offload.pyx).
from libc.stdint cimport uint8_t, int32_t, int64_t, uint64_t

from engine._libc_net cimport (timespec, clock_gettime, CLOCK_REALTIME, ssize_t, size_t,
                               read, errno, EINTR, EAGAIN)

cdef enum:
    ERRNO_SLOTS = 256     # per-errno counters; errno values above 255 share slot 255


cdef struct Slots:
    uint8_t *buf
    Py_ssize_t bufsize
    int64_t *off
    int64_t *length
    int64_t *slot_start
    int64_t *slot_end
    uint8_t *drop
    int32_t *sa
    int64_t *ts_ns
    uint8_t *l2_len
    Py_ssize_t capacity
    Py_ssize_t count
    Py_ssize_t used


cdef inline int _slots(batch, Slots *s) except -1:
    """Point s at batch's arrays after checking every per-packet array holds capacity
    entries and count/used are in range (the nogil loops rely on that, not on bounds
    checks)."""
    cdef uint8_t[::1] buf = batch.buf
    cdef int64_t[::1] off = batch.off
    cdef int64_t[::1] length = batch.length
    cdef int64_t[::1] slot_start = batch.slot_start
    cdef int64_t[::1] slot_end = batch.slot_end
    cdef uint8_t[::1] drop = batch.drop
    cdef int32_t[::1] sa = batch.sa
    cdef int64_t[::1] ts_ns = batch.ts_ns
    cdef uint8_t[::1] l2_len = batch.l2_len
    cdef Py_ssize_t cap = batch.capacity
    if cap < 1 or min(off.shape[0], length.shape[0], slot_start.shape[0], slot_end.shape[0],
                      drop.shape[0], sa.shape[0], ts_ns.shape[0], l2_len.shape[0]) < cap:
        raise ValueError("PacketBatch arrays are smaller than its capacity")
    s.count = batch.count
    s.used = batch.used
    if s.count < 0 or s.count > cap or s.used < 0 or s.used > buf.shape[0]:
        raise ValueError("PacketBatch count/used out of range")
    s.buf = &buf[0]
    s.bufsize = buf.shape[0]
    s.off = &off[0]
    s.length = &length[0]
    s.slot_start = &slot_start[0]
    s.slot_end = &slot_end[0]
    s.drop = &drop[0]
    s.sa = &sa[0]
    s.ts_ns = &ts_ns[0]
    s.l2_len = &l2_len[0]
    s.capacity = cap
    return 0


cdef inline int64_t _now_ns() noexcept nogil:
    """Wall-clock nanoseconds: the capture time a received packet gets (batch.ts_ns)."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline void _count_errno(uint64_t *stats, Py_ssize_t base, int e) noexcept nogil:
    if e < 0 or e >= ERRNO_SLOTS:
        e = ERRNO_SLOTS - 1
    stats[base + e] += 1


cdef inline ssize_t _read_counted(int fd, void *dst, size_t n, uint64_t *stats,
                                  Py_ssize_t errors, Py_ssize_t errno_base) noexcept nogil:
    """read() once, again after EINTR. Returns the bytes read, 0 at EOF, or -errno (-EAGAIN:
    nothing is waiting); a failure other than EAGAIN is counted at stats[errors] and
    stats[errno_base + errno]."""
    cdef ssize_t r
    cdef int e
    while True:
        r = read(fd, dst, n)
        if r >= 0:
            return r
        e = errno
        if e == EINTR:
            continue
        if e != EAGAIN:
            stats[errors] += 1
            _count_errno(stats, errno_base, e)
        return -e
