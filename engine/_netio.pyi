"""Type stub for the compiled batched packet I/O (engine/_netio.pyx)."""
import numpy as np
import numpy.typing as npt

from .batch import PacketBatch

COUNTERS: tuple[str, ...]
N_COUNTERS: int
TX_ERRNO_BASE: int
RX_ERRNO_BASE: int
STATS_SIZE: int

class RxMeta:
    peer: npt.NDArray[np.uint8]        # (capacity, 18): address (16) + port (2), big endian
    ctl: npt.NDArray[np.int64]         # (ctl_capacity, 2): IKE message (offset, length)
    ctl_peer: npt.NDArray[np.uint8]    # (ctl_capacity, 18)
    n_ctl: int
    def __init__(self, capacity: int, ctl_capacity: int = 64) -> None: ...

def udp_recv(fd: int, batch: PacketBatch, local_ip: bytes, local_port: int, meta: RxMeta,
             stats: npt.NDArray[np.uint64], max_len: int = 2048,
             max_packets: int = 0) -> int: ...
def esp_raw_recv(fd: int, batch: PacketBatch, local_ip: bytes, meta: RxMeta,
                 stats: npt.NDArray[np.uint64], proto: int = 50, max_len: int = 2048,
                 max_packets: int = 0) -> int: ...
def udp_send(fd: int, batch: PacketBatch, stats: npt.NDArray[np.uint64], family: int = 2,
             set_tos: bool = True) -> int: ...
def esp_raw_send(fd: int, batch: PacketBatch, stats: npt.NDArray[np.uint64], family: int = 2,
                 proto: int = 50, set_tos: bool = True, hdrincl: bool = False) -> int: ...
def tun_read(fd: int, batch: PacketBatch, stats: npt.NDArray[np.uint64], max_len: int = 2048,
             max_packets: int = 0) -> int: ...
def tun_write(fd: int, batch: PacketBatch, stats: npt.NDArray[np.uint64]) -> int: ...
