# Declarations of the parts of glibc/Linux the batched packet I/O (engine/_netio.pyx) uses:
# read/write on a TUN fd, recvmmsg/sendmmsg on UDP and raw IP sockets, ancillary data for
# the received TOS / traffic class. recvmmsg and sendmmsg are GNU extensions: the extension
# is built with _GNU_SOURCE (setup.py).
from libc.stddef cimport size_t
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EAGAIN
        EWOULDBLOCK     # == EAGAIN on Linux: test EAGAIN only (a C switch rejects both)
        EINTR
        EBADF
        EFAULT
        EINVAL
        ENOTSOCK
        ENOBUFS

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    enum:
        CLOCK_REALTIME
    int clock_gettime(int clk_id, timespec *tp)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *m)
    cmsghdr *CMSG_NXTHDR(msghdr *m, cmsghdr *c)
    unsigned char *CMSG_DATA(cmsghdr *c)
    size_t CMSG_SPACE(size_t n)
    size_t CMSG_LEN(size_t n)
    enum:
        AF_INET
        AF_INET6
        MSG_TRUNC
        MSG_DONTWAIT
        MSG_CTRUNC
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, timespec *timeout)
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags)

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    enum:
        IPPROTO_IP
        IPPROTO_IPV6
        IP_TOS
        IPV6_TCLASS
    uint16_t htons(uint16_t v)
    uint16_t ntohs(uint16_t v)
