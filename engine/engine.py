"""The engine's public API: install SAs, encrypt and decrypt PacketBatches, read counters.

This is what the `spu` command, the IKE daemon, the SPU workers and any embedding daemon
use. Everything per packet happens in three passes over a batch (ARCHITECTURE.md):
prepare (Numba) -> crypto (Cython, GIL released once) -> finish (Numba).

    eng = Engine()
    out_sa = eng.install(cfg, "out")          # SAConfig from engine.sa
    eng.encrypt(batch)                        # in place; batch.drop says what was dropped
    eng.stats()               # {"packets_in": .., "packets_out": .., "dropped": {..}}

Packets with batch.drop != 0 on entry are counted under that reason and left alone (pcap
I/O marks non-IP frames MALFORMED that way). On encrypt, batch.sa[i] >= 0 forces packet i
onto that outbound SA; otherwise the outbound SAs' selectors are matched in install order.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from . import _crypto, backends
from .algorithms import MAX_ICV, Auth
from .batch import PacketBatch
from .drops import N_DROPS, drop_dict
from .kernels_ah import (AH_SAVE, finish_decrypt_ah, finish_encrypt_ah, prepare_decrypt_ah,
                         prepare_encrypt_ah)
from .kernels_esp import (D_DEFER, D_DONE, finish_decrypt, finish_encrypt, prepare_decrypt,
                          prepare_encrypt)
from .ops import OP_COLS
from .sa import PROTO_AH, SAConfig
from .sad import CTR_BYTES, CTR_DROP0, CTR_PACKETS, SADatabase

Direction = Literal["in", "out"]


class _class_or_instance:
    """A method that also works on the class (then it receives the class)."""

    def __init__(self, fn):
        self.fn = fn

    def __get__(self, obj, cls):
        return self.fn.__get__(cls if obj is None else obj)


class Engine:
    """One SA database and the batch operations over it (one SPU's data path)."""

    def __init__(self, max_sas: int = 1024, backend: str = "auto"):
        """`backend` picks the native crypto (engine/backends.py): "auto" runs each SA on
        Intel's multi-buffer library where it supports the SA's transforms and on OpenSSL
        otherwise; "openssl" only OpenSSL; "ipsec-mb" only the multi-buffer library (an
        error if it is not built; SAs it cannot run are refused)."""
        self.sad = SADatabase(max_sas, backend=backend)
        self._ops = np.zeros((0, OP_COLS), np.int64)
        self._aux = np.zeros((0, 3), np.int64)
        # AH: the IP header chain and the received ICV, saved while zeroed for the ICV pass
        self._ah_save = np.zeros((0, AH_SAVE), np.uint8)
        self._icv_in = np.zeros((0, MAX_ICV), np.uint8)
        self.gdrop = np.zeros(N_DROPS, np.uint64)   # drops by reason, all SAs and none
        self.packets_in = 0
        self.packets_out = 0

    # -- control -------------------------------------------------------------------------
    def install(self, cfg: SAConfig, direction: Direction, slot: int | None = None) -> int:
        """Install one SA; returns its handle (slot). direction "out" encrypts, "in" decrypts.
        `slot` asks for a particular free handle (engine/spu.py keeps handles equal across
        its workers)."""
        if direction not in ("in", "out"):
            raise ValueError("direction must be 'in' or 'out'")
        if cfg.proto == PROTO_AH and (cfg.auth_id == Auth.NONE or cfg.encap_dport is not None):
            raise ValueError("AH needs an integrity algorithm and no UDP encapsulation")
        return self.sad.install(cfg, direction == "out", slot)

    def remove(self, handle: int) -> None:
        """Remove an SA; its keys and key-derived state are wiped."""
        self.sad.remove(handle)

    def config(self, handle: int) -> SAConfig:
        return self.sad.configs[handle]

    def handles(self) -> list[int]:
        return list(self.sad.configs)

    # -- data ----------------------------------------------------------------------------
    def _scratch(self, n: int):
        if self._ops.shape[0] < n:
            self._ops = np.zeros((n, OP_COLS), np.int64)
            self._aux = np.zeros((n, 3), np.int64)
            self._ah_save = np.zeros((n, AH_SAVE), np.uint8)
            self._icv_in = np.zeros((n, MAX_ICV), np.uint8)
        return self._ops, self._aux

    def encrypt(self, batch: PacketBatch) -> None:
        n = batch.count
        self._check_preset(batch)
        ops, _ = self._scratch(n)
        s = self.sad
        ah = s.ah_out > 0                 # else no row is AH: the AH passes would do nothing
        prepare_encrypt(batch.buf, batch.off, batch.length, batch.slot_start, batch.slot_end,
                        batch.drop, batch.sa, n, s.rec, s.addr, *s.policy, ops, s.ctr, self.gdrop)
        if ah:
            prepare_encrypt_ah(batch.buf, batch.off, batch.length, batch.slot_start,
                               batch.slot_end, batch.drop, batch.sa, n, s.rec, s.addr, ops,
                               self._ah_save, s.ctr, self.gdrop)
        self.esp_crypto(batch.buf, ops, batch.drop, n, True)
        if ah:
            _crypto.ah_icv(s.crypto, batch.buf, ops, batch.drop, self._icv_in, n, False)
        finish_encrypt(batch.buf, batch.off, batch.length, batch.drop, batch.sa, n,
                       s.rec, ops, s.ctr, self.gdrop)
        if ah:
            finish_encrypt_ah(batch.buf, batch.off, batch.length, batch.drop, batch.sa, n,
                              s.rec, ops, self._ah_save, s.ctr, self.gdrop)
        self._account(batch)

    def decrypt(self, batch: PacketBatch) -> None:
        n = batch.count
        self._check_preset(batch)
        drop = batch.drop
        final = None
        start = 0
        while True:
            cut = self._decrypt_round(batch, n)
            if cut >= n:
                break
            # An ESN high-bit inference depends on packets before `cut` (kernels_esp.
            # prepare_decrypt): keep their results aside and run the rest as a new round.
            if final is None:
                final = np.empty(n, np.uint8)
            final[start:cut] = drop[start:cut]
            drop[start:cut] = D_DONE
            rest = drop[cut:n]
            rest[rest == D_DEFER] = 0
            start = cut
        if final is not None:
            drop[:start] = final[:start]
        self._account(batch)

    def esp_crypto(self, buf: np.ndarray, ops: np.ndarray, drop: np.ndarray, n: int,
                   encrypt: bool) -> None:
        """The ESP crypto pass over prepared op rows: each backend in turn over the same rows,
        each taking only the rows of the SAs it runs (bench/ceiling.py times this alone)."""
        s = self.sad
        if s.esp_mb and s.mb is not None:
            (backends.mb_encrypt if encrypt else backends.mb_decrypt)(s.mb, buf, ops, drop, n)
        if s.esp_openssl:
            (_crypto.esp_encrypt if encrypt else _crypto.esp_decrypt)(s.crypto, buf, ops, drop,
                                                                      n)

    @staticmethod
    def _check_preset(batch: PacketBatch) -> None:
        """Pre-set drop reasons index the counter arrays in the kernels (no bounds checks
        there): anything that is not a Drop would be a write past their end."""
        n = batch.count
        d = batch.drop[:n]
        if np.count_nonzero(d) and int(d.max()) >= N_DROPS:     # (count_nonzero is faster)
            raise ValueError("batch.drop holds a value that is not an engine.drops.Drop")

    def _decrypt_round(self, batch: PacketBatch, n: int) -> int:
        """prepare -> crypto -> finish over the packets not marked D_DONE/D_DEFER; returns
        where prepare cut the batch (n when it did not)."""
        ops, aux = self._scratch(n)
        s = self.sad
        ah = s.ah_in > 0                  # else prepare_decrypt drops protocol 51 itself
        cut = prepare_decrypt(batch.buf, batch.off, batch.length, batch.drop, batch.sa, n,
                              s.rec, s.addr, s.in_hash, s.encap_ports, s.top, s.bitmap, ops,
                              aux, s.ctr, self.gdrop, ah)
        if ah:
            prepare_decrypt_ah(batch.buf, batch.off, batch.length, batch.drop, batch.sa, n,
                               s.rec, s.addr, s.in_hash, s.top, s.bitmap, ops, aux,
                               self._ah_save, self._icv_in, s.ctr, self.gdrop)
        self.esp_crypto(batch.buf, ops, batch.drop, n, False)
        if ah:
            _crypto.ah_icv(s.crypto, batch.buf, ops, batch.drop, self._icv_in, n, True)
        finish_decrypt(batch.buf, batch.off, batch.length, batch.drop, batch.sa, n, s.rec,
                       s.addr, s.top, s.bitmap, ops, aux, s.ctr, self.gdrop)
        if ah:
            finish_decrypt_ah(batch.buf, batch.off, batch.length, batch.drop, batch.sa, n,
                              s.rec, s.addr, s.top, s.bitmap, ops, aux, self._ah_save,
                              self._icv_in, s.ctr, self.gdrop)
        return int(cut)

    def _account(self, batch: PacketBatch) -> None:
        n = batch.count
        self.packets_in += n
        self.packets_out += n - int(np.count_nonzero(batch.drop[:n]))

    # -- counters ------------------------------------------------------------------------
    def stats(self) -> dict:
        """Global counters in the --stats-json shape (packets_in = out + sum of drops)."""
        return {"packets_in": self.packets_in, "packets_out": self.packets_out,
                "dropped": drop_dict(self.gdrop)}

    def sa_stats(self, handle: int) -> dict:
        c = self.sad.ctr[handle]
        return {"packets": int(c[CTR_PACKETS]), "bytes": int(c[CTR_BYTES]),
                "dropped": drop_dict(c[CTR_DROP0:]),
                "seq_out": int(self.sad.rec[handle]["seq_out"]),
                "replay_top": int(self.sad.top[handle])}

    @_class_or_instance
    def backend(self_or_cls) -> str:
        """The crypto backends in use, best first: "ipsec-mb 1.3.0 (avx512) + openssl 3.0.19"
        (Engine.backend() on the class: what the default, backend="auto", uses; a missing
        multi-buffer build shows as "(ipsec-mb: not built)")."""
        if isinstance(self_or_cls, Engine):
            return backends.describe(self_or_cls.sad.backend_choice)
        return backends.describe("auto")

    def backend_of(self, handle: int) -> str:
        """The backend that runs one SA's crypto, e.g. "ipsec-mb 1.3.0 (avx512)"."""
        if handle not in self.sad.configs:
            raise KeyError(f"no SA with handle {handle}")
        return self.sad.backend_of[handle].label

