"""The SA database: fixed-layout runtime records built once per SA from an SAConfig.

Hot state lives in numpy arrays that the Numba kernels read and write directly:
- `rec`  : structured array, one record per slot (SA_DTYPE): what the kernels need per
           packet (SPI, mode, transform sizes, sequence counter, replay window geometry).
- `addr` : uint8 [slots, 64]: SA src (0:16), SA dst (16:32), selector src (32:48) and
           selector dst (48:64) as 16-byte addresses (IPv4 in the first 4 bytes).
- `top` + `bitmap`: the anti-replay state (engine/replay.py layout).
- `ctr`  : uint64 [slots, CTR_COLS] per-SA counters (packets, bytes, and one per Drop).
- `in_hash`: open-addressing table (SPI, dst, proto) -> inbound slot.
- `spd`  : ordered outbound slots, matched first-to-last by selector, and `policy`, the
           same compiled for the kernels with its flow cache (engine/kernels_spd.py).
- `ah_in`, `ah_out`: how many inbound / outbound AH SAs there are (0: no AH passes), and
  `esp_openssl`, `esp_mb` how many ESP SAs each backend runs (0: no pass of that backend).
The native crypto state (keyed contexts, HMAC states) lives beside them in a CryptoTable
(OpenSSL, every SA) and, for the SAs the multi-buffer backend runs, an MBTable
(engine/backends.py picks the backend per SA; the CryptoTable slot is then disabled).
"""
from __future__ import annotations

import ipaddress

import numpy as np

from . import backends, replay
from ._crypto import CryptoTable
from .algorithms import AUTHS, CIPHERS, Auth
from .drops import N_DROPS
from .kernels_spd import (FLOW_EMPTY, FLOW_KEY, FLOW_MIN_POLICIES, FLOW_SETS, POL_A_COLS,
                          POL_I_COLS)
from .sa import PROTO_AH, PROTO_ESP, SAConfig

SA_DTYPE = np.dtype([
    ("active", np.uint8), ("outbound", np.uint8), ("proto", np.uint8), ("mode", np.uint8),
    ("family", np.uint8), ("esn", np.uint8), ("encap", np.uint8), ("integrity", np.uint8),
    ("cipher", np.uint8), ("auth", np.uint8), ("align", np.uint8), ("iv_len", np.uint8),
    ("icv_len", np.uint8), ("has_sel", np.uint8), ("sel_family", np.uint8),
    ("sel_src_len", np.uint8), ("sel_dst_len", np.uint8), ("sel_proto", np.uint8),
    ("spi", np.uint32), ("window", np.uint32),
    ("encap_sport", np.int32), ("encap_dport", np.int32),
    ("sel_sport", np.int32), ("sel_dport", np.int32),   # -1 = any
    ("src4", np.uint32), ("dst4", np.uint32),    # IPv4 SA addresses as numbers
    # IPv4 selector prefixes as 32-bit network and mask (IPv6 ones: in `addr` only)
    ("sel_src4", np.uint32), ("sel_src_mask4", np.uint32),
    ("sel_dst4", np.uint32), ("sel_dst_mask4", np.uint32),
    ("bm_words", np.int32), ("bm_base", np.int64),
    ("seq_out", np.uint64),                              # last outbound sequence number used
    # inbound, during one decrypt batch: the window edge as it will be after the packets
    # pre-checked so far, so ESN high bits are inferred in packet order (RFC 4303 App. A)
    ("ptop", np.uint64),
], align=True)   # C layout: aligned fields keep the kernels' loads single instructions

CTR_PACKETS = 0
CTR_BYTES = 1
CTR_DROP0 = 2                      # ctr[s, CTR_DROP0 + reason]
CTR_COLS = CTR_DROP0 + N_DROPS

ADDR_SRC, ADDR_DST, ADDR_SEL_SRC, ADDR_SEL_DST = 0, 16, 32, 48


def _addr16(ip) -> np.ndarray:
    return np.frombuffer(ip.packed.ljust(16, b"\0"), np.uint8)


class SADatabase:
    """Slots for up to `max_sas` SAs; install/remove are control-plane operations."""

    def __init__(self, max_sas: int = 1024, max_window_words: int | None = None,
                 backend: str = "auto"):
        self.max_sas = max_sas
        self.backend_choice = backend
        self.backends = backends.backends_for(backend)      # best first
        self.mb = (backends.mb_table(max_sas)
                   if any(b is backends.IPSEC_MB for b in self.backends) else None)
        self.backend_of: dict[int, backends.Backend] = {}   # slot -> the backend that runs it
        self.rec = np.zeros(max_sas, SA_DTYPE)
        self.addr = np.zeros((max_sas, 64), np.uint8)
        self.top = np.zeros(max_sas, np.uint64)
        self.ctr = np.zeros((max_sas, CTR_COLS), np.uint64)
        self.crypto = CryptoTable(max_sas)
        self.configs: dict[int, SAConfig] = {}
        self.bitmap = np.zeros(max(max_window_words or 0, 64), np.uint64)
        self._bm_free: list[tuple[int, int]] = [(0, self.bitmap.size)]
        self.in_hash = np.full(2 * 1024, -1, np.int32)
        self.spd = np.zeros(0, np.int32)
        self.policy = compile_policy(self.rec, self.addr, self.spd)
        self.encap_ports = np.zeros(0, np.int32)
        self.ah_in = 0                     # installed inbound / outbound AH SAs
        self.ah_out = 0
        self.esp_openssl = 0               # installed ESP SAs run by OpenSSL / ipsec-mb
        self.esp_mb = 0
        self._free = list(range(max_sas - 1, -1, -1))

    # -- install / remove ------------------------------------------------------------------
    def install(self, cfg: SAConfig, outbound: bool, slot: int | None = None) -> int:
        """Install into a free slot (`slot` picks one: the SPU workers keep the
        dispatcher's handle numbers)."""
        if not self._free:
            raise OverflowError(f"SA table full ({self.max_sas} SAs)")
        if slot is not None and slot not in self._free:
            raise ValueError(f"SA slot {slot} is not free")
        key = (cfg.spi, cfg.dst.packed, cfg.proto)
        if not outbound and any(
                (c.spi, c.dst.packed, c.proto) == key and not self.rec[s]["outbound"]
                for s, c in self.configs.items()):
            raise ValueError(f"duplicate inbound SA spi 0x{cfg.spi:08x} dst {cfg.dst}")
        if slot is not None:
            self._free.remove(slot)
            s = slot
        else:
            s = self._free.pop()
        try:
            self._fill(s, cfg, outbound)
        except BaseException:
            self._bm_release(int(self.rec[s]["bm_base"]), int(self.rec[s]["bm_words"]))
            self.rec[s] = np.zeros((), SA_DTYPE)
            self._free.append(s)
            raise
        self.configs[s] = cfg
        self._rebuild_lookup()
        return s

    def remove(self, s: int) -> None:
        if s not in self.configs:
            raise KeyError(f"no SA in slot {s}")
        r = self.rec[s]
        self._bm_release(int(r["bm_base"]), int(r["bm_words"]))
        self.crypto.remove(s)              # frees contexts, wipes key-derived state
        if self.mb is not None:
            self.mb.remove(s)              # wipes schedules, GCM key data, HMAC states
        self.backend_of.pop(s, None)
        self.rec[s] = np.zeros((), SA_DTYPE)
        self.addr[s] = 0
        self.top[s] = 0
        del self.configs[s]
        self._free.append(s)
        self._rebuild_lookup()

    def _fill(self, s: int, cfg: SAConfig, outbound: bool) -> None:
        r = self.rec[s]
        r["outbound"] = outbound
        r["proto"] = cfg.proto
        r["mode"] = cfg.mode
        r["family"] = cfg.dst.version
        r["esn"] = cfg.esn
        r["spi"] = cfg.spi
        r["integrity"] = cfg.has_integrity
        cipher, auth = cfg.cipher_id, cfg.auth_id
        r["cipher"], r["auth"] = cipher, auth
        if cfg.proto == PROTO_ESP:
            name = cfg.aead or cfg.enc or "ecb(cipher_null)"
            spec = CIPHERS[name]
            key = cfg.aead_key if cfg.aead else cfg.enc_key
            align = max(spec.block, 4)
            if align & (align - 1):
                raise ValueError(f"{name}: block {spec.block} is not a power of 2 "
                                 f"(the kernels pad and check with a mask)")
            r["align"] = align
            r["iv_len"] = spec.iv_len
            salt = spec.salt_len
        else:
            key, salt = b"", 0
            r["align"] = 4 if cfg.dst.version == 4 else 8   # RFC 4302 2.2: ICV field padding
            r["iv_len"] = 0
        icv = cfg.icv_bits // 8 if (cfg.aead or auth != Auth.NONE) else 0
        if icv == 0 and (cfg.aead or auth != Auth.NONE):
            icv = (CIPHERS[cfg.aead].icv_bits[-1] if cfg.aead
                   else AUTHS[cfg.auth].default_bits) // 8
        r["icv_len"] = icv
        r["encap"] = cfg.encap_dport is not None
        r["encap_sport"] = cfg.encap_sport or 0
        r["encap_dport"] = cfg.encap_dport or 0
        seq_mask = (1 << 64) - 1 if cfg.esn else (1 << 32) - 1
        r["seq_out"] = cfg.oseq & seq_mask
        self.top[s] = cfg.seq & seq_mask
        window = cfg.replay_window if cfg.has_integrity else 0
        r["window"] = window
        words = replay.words_for_window(window) if window else 0
        # rounded up to a power of 2 (more ring words than the window needs are harmless):
        # kernels_esp.accept_in_order's in-order step then masks instead of dividing
        words = 1 << (int(words) - 1).bit_length() if words else 0
        r["bm_words"] = words
        r["bm_base"] = self._bm_alloc(words)
        self.addr[s, ADDR_SRC:ADDR_SRC + 16] = _addr16(cfg.src)
        self.addr[s, ADDR_DST:ADDR_DST + 16] = _addr16(cfg.dst)
        if cfg.dst.version == 4:
            r["src4"] = int(cfg.src)
            r["dst4"] = int(cfg.dst)
        sel = cfg.sel
        r["has_sel"] = sel is not None
        r["sel_sport"] = r["sel_dport"] = -1
        if sel is not None:
            r["sel_family"] = sel.src.version
            r["sel_src_len"] = sel.src.prefixlen
            r["sel_dst_len"] = sel.dst.prefixlen
            r["sel_proto"] = sel.proto
            r["sel_sport"] = -1 if sel.sport is None else sel.sport
            r["sel_dport"] = -1 if sel.dport is None else sel.dport
            self.addr[s, ADDR_SEL_SRC:ADDR_SEL_SRC + 16] = _addr16(sel.src.network_address)
            self.addr[s, ADDR_SEL_DST:ADDR_SEL_DST + 16] = _addr16(sel.dst.network_address)
            if sel.src.version == 4 and sel.dst.version == 4:
                r["sel_src4"] = int(sel.src.network_address)
                r["sel_src_mask4"] = int(sel.src.netmask)
                r["sel_dst4"] = int(sel.dst.network_address)
                r["sel_dst_mask4"] = int(sel.dst.netmask)
        self.ctr[s] = 0
        akey = cfg.auth_key if auth != Auth.NONE else b""
        runs = backends.select(self.backends, int(cipher), int(auth), icv, cfg.esn, cfg.proto)
        args = (s, int(cipher), bytes(key), salt, int(auth), bytes(akey), icv,
                int(r["iv_len"]), cfg.esn, outbound, cfg.proto)
        self.crypto.install(*args)         # always: OpenSSL is the fallback
        if runs is backends.IPSEC_MB:
            try:
                self.mb.install(*args)
            except BaseException:
                self.crypto.remove(s)
                raise
            self.crypto.set_enabled(s, False)
        self.backend_of[s] = runs
        r["active"] = 1

    # -- replay bitmap space (first fit over a free list; grows by doubling) ---------------
    def _bm_alloc(self, words: int) -> int:
        if words == 0:
            return 0
        for k, (base, n) in enumerate(self._bm_free):
            if n >= words:
                self._bm_free[k] = (base + words, n - words)
                self.bitmap[base:base + words] = 0
                return base
        old = self.bitmap.size
        grow = max(old, words)
        self.bitmap = np.concatenate([self.bitmap, np.zeros(grow, np.uint64)])
        self._bm_free.append((old, grow))
        return self._bm_alloc(words)

    def _bm_release(self, base: int, words: int) -> None:
        if words:
            self.bitmap[base:base + words] = 0
            self._bm_free.append((base, words))

    # -- lookup structures (rebuilt on every change: control path only) --------------------
    def _rebuild_lookup(self) -> None:
        inbound = [s for s in self.configs if not self.rec[s]["outbound"]]
        size = 1024
        while size < 4 * max(1, len(inbound)):
            size *= 2
        h = np.full(size, -1, np.int32)
        for s in inbound:
            k = spi_hash(int(self.rec[s]["spi"]), size)
            while h[k] != -1:
                k = (k + 1) & (size - 1)
            h[k] = s
        self.in_hash = h
        # install order is policy order: first match wins (an SA file's line order)
        self.spd = np.array([s for s in self.configs if self.rec[s]["outbound"]], np.int32)
        self.policy = compile_policy(self.rec, self.addr, self.spd)
        # Without AH SAs the engine skips the AH passes (kernels_ah, _crypto.ah_icv), and
        # a backend's ESP pass when it runs no ESP SA
        self.ah_in = sum(1 for s in inbound if self.rec[s]["proto"] == PROTO_AH)
        self.ah_out = sum(1 for s in self.spd.tolist() if self.rec[s]["proto"] == PROTO_AH)
        esp = [self.backend_of[s] for s in self.configs if self.rec[s]["proto"] == PROTO_ESP]
        self.esp_openssl = sum(1 for b in esp if b is backends.OPENSSL)
        self.esp_mb = len(esp) - self.esp_openssl
        self.encap_ports = np.array(sorted({int(self.rec[s]["encap_dport"]) for s in inbound
                                            if self.rec[s]["encap"]}), np.int32)


def spi_hash(spi: int, size: int) -> int:
    """Same function as kernels_esp.spi_slot (Fibonacci hashing of the SPI)."""
    return ((spi * 0x9E3779B1) & 0xFFFFFFFF) >> 16 & (size - 1)


def ip_of(addr: np.ndarray, family: int):
    raw = bytes(addr[:4] if family == 4 else addr[:16])
    return ipaddress.ip_address(raw)


def compile_policy(rec, addr, spd) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The outbound selectors (rec, addr, spd) compiled for kernels_spd.lookup_outbound:
    (pol_i, pol_a, flow_keys, flow_slots), the last two an empty flow cache. The same rule
    as kernels_esp.selector_match (a test holds it to that). Built on the control path at
    every install and remove, in numpy (a Python loop over the policies made an install
    5x slower with 2000 SAs)."""
    r = rec[spd]
    pol_i = np.stack([spd, r["has_sel"], r["sel_family"], r["sel_proto"], r["sel_sport"],
                      r["sel_dport"]], axis=1).astype(np.int64).reshape(len(spd), POL_I_COLS)
    pol_a = np.zeros((len(spd), POL_A_COLS), np.uint64)
    for col, base, plen in ((0, ADDR_SEL_SRC, r["sel_src_len"]),
                            (4, ADDR_SEL_DST, r["sel_dst_len"])):
        # 16 address bytes as two big-endian 64-bit words; masks of the prefix length
        words = np.ascontiguousarray(addr[spd, base:base + 16]).view(">u8").astype(np.uint64)
        mask = np.stack([_prefix_mask(plen), _prefix_mask(plen.astype(np.int64) - 64)], axis=1)
        pol_a[:, col:col + 2] = words.reshape(len(spd), 2) & mask
        pol_a[:, col + 2:col + 4] = mask
    sets = FLOW_SETS if len(spd) >= FLOW_MIN_POLICIES else 0
    # (a key is read only where its slot holds an answer: no need to clear the keys)
    return (pol_i, pol_a, np.empty((2 * sets, FLOW_KEY), np.uint64),
            np.full(2 * sets, FLOW_EMPTY, np.int32))


def _prefix_mask(bits) -> np.ndarray:
    """The 64-bit masks of the first `bits` bits of a word (bits below 0: none, above 64:
    all)."""
    b = np.clip(np.asarray(bits, np.int64), 0, 64).astype(np.uint64)
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    # (a shift by 64 is undefined: all 64 bits are taken apart)
    return np.where(b >= 64, full, ~(full >> np.minimum(b, np.uint64(63))))
