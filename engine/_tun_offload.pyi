"""Type stub for the compiled TUN offloads (engine/_tun_offload.pyx)."""
import numpy as np
import numpy.typing as npt

from .batch import PacketBatch

OFFLOAD_COUNTERS: tuple[str, ...]
N_OFFLOAD: int
VNET_HDR_LEN: int

class TsoState:
    offload_stats: npt.NDArray[np.uint64]
    @property
    def pending(self) -> bool: ...
    def __init__(self) -> None: ...

def tun_read_offload(fd: int, batch: PacketBatch, stats: npt.NDArray[np.uint64],
                     state: TsoState, max_len: int = 2048, max_packets: int = 0) -> int: ...
def tso_feed(data: bytes, batch: PacketBatch, stats: npt.NDArray[np.uint64], state: TsoState,
             max_len: int = 2048, max_packets: int = 0) -> int: ...
def tun_write_offload(fd: int, batch: PacketBatch, stats: npt.NDArray[np.uint64],
                      offload_stats: npt.NDArray[np.uint64], gro: bool = True) -> int: ...
def gro_plan(batch: PacketBatch) -> list[list[int]]: ...
