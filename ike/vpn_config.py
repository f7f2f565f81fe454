"""The Junos VPN configuration of CONFIG.md -> the records `spu gateway` runs.

    cfg = load_gateway_config("gw.conf")        # or parse_gateway_config(text, "gw.conf")
    cfg.ike_gateways["GW-A"].ike                 # ike.config.IKEConfig
    cfg.vpns["VPN-A"].children                   # ike.config.ChildConfig, one per selector
    cfg.manual_vpns["M"].inbound / .outbound     # engine.sa.SAConfig
    print(cfg.describe())                        # what `spu gateway --check` prints

ike/junos.py reads the syntax, ike/vpn_schema.py checks each statement against the table
of CONFIG.md, and this module checks what the statements say together (references, the
four-proposal limit, required statements) and builds the records. Every error is a
ConfigError naming the file and line; statements pyspu does not use (system, security
zones, ...) are ignored with one warning on the "pyspu.config" logger.

Junos defaults where CONFIG.md is silent: IKE SA lifetime 28800 s, IPsec SA 3600 s and no
kilobyte limit, DPD (when configured) every 10 s with threshold 5, NAT keepalive 20 s,
anti-replay window 64, establish-tunnels on-traffic. Not Junos's: `version` defaults to
v2-only (the IKE core speaks IKEv2; Junos itself defaults to v1-only), and manual-key SAs
run without anti-replay unless anti-replay-window-size is given (their sequence numbers
restart whenever a peer restarts).
"""
from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Union

from engine.sa import SAConfig

from .config import MAX_PROPOSALS, ChildConfig, IKEConfig, Identity
from .junos import ConfigError, parse
from .junos_algorithms import DH_GROUPS, ah_proposal_text, esp_proposal_text, ike_proposal_text
from .vpn_describe import describe
from .vpn_manual import manual_sas
from .vpn_schema import TABLE, Ctx, Section, check, interface_address, tunnel_unit

__all__ = ["ConfigError", "GatewayConfig", "IKEGateway", "IPsecVPN", "ManualVPN",
           "PyspuSettings", "load_gateway_config", "parse_gateway_config"]

log = logging.getLogger("pyspu.config")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

# Junos defaults (CONFIG.md is silent on them).
IKE_LIFETIME = 28800
IPSEC_LIFETIME = 3600
DPD_INTERVAL = 10
DPD_THRESHOLD = 5
NAT_KEEPALIVE = 20
REPLAY_WINDOW = 64
# pyspu's own defaults (the `pyspu { }` block).
TUN_NAME = "st0"
CONTROL_SOCKET = "/run/pyspu/gateway.sock"
WORKERS = 1
#: Tuning bound: Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
MAX_IFNAME = 15


@dataclass(frozen=True)
class IKEGateway:
    """`security ike gateway NAME` with its policy and proposals resolved."""
    name: str
    ike: IKEConfig                  # identities, PSK/credentials, proposals, children, DPD
    address: IPAddress              # the peer (first of `address`)
    local_address: Optional[IPAddress]  # local-address, else external-interface's address
    version: str                    # "v2-only" | "v1-only" (the runtime refuses v1)
    ike_policy: str
    auth_method: str                # Junos name: pre-shared-keys | rsa-signatures | ...
    proposals: tuple[str, ...]      # proposal strings as in ike.proposals (also in .ike)
    mode: str = "main"              # IKEv1 phase 1 mode, kept for v1-only gateways
    nat_traversal: bool = True      # False with no-nat-traversal
    dpd_threshold: int = DPD_THRESHOLD
    external_interface: Optional[str] = None
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class IPsecVPN:
    """`security ipsec vpn NAME` keyed by IKE: one ChildConfig per traffic selector."""
    name: str
    gateway: str
    ipsec_policy: str
    bind_interface: str             # "st0.N"
    bind_unit: int
    establish: str                  # "immediately" | "on-traffic"
    protocol: str                   # "esp" | "ah" (the children's ChildConfig.protocol)
    proposals: tuple[str, ...]      # ESP/AH proposal strings, the PFS group appended
    pfs_group: Optional[int]        # IANA DH group number, None without PFS
    children: tuple[ChildConfig, ...]
    replay_window: int = REPLAY_WINDOW
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ManualVPN:
    """`security ipsec vpn NAME manual`: both directions' SAs, the same SPI each way."""
    name: str
    bind_interface: str
    bind_unit: int
    local_address: IPAddress
    remote_address: IPAddress
    protocol: str                   # "esp" | "ah"
    inbound: SAConfig               # remote -> local
    outbound: SAConfig              # local -> remote
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class PyspuSettings:
    """The `pyspu { }` block: what Junos has no statement for."""
    tun_name: str = TUN_NAME
    control_socket: str = CONTROL_SOCKET
    listen_address: str = "0.0.0.0"     # default: the one local address the VPNs use
    workers: int = WORKERS
    # ESP in UDP 4500 even without a NAT (IKEConfig.force_encap), for every IKE gateway
    force_udp_encapsulation: bool = False


@dataclass(frozen=True)
class GatewayConfig:
    """Everything `spu gateway` runs, read from one Junos configuration file."""
    ike_gateways: Mapping[str, IKEGateway]
    vpns: Mapping[str, IPsecVPN]
    manual_vpns: Mapping[str, ManualVPN]
    interfaces: Mapping[int, tuple[IPInterface, ...]]   # st0 unit -> its addresses
    routes: Mapping[IPNetwork, str]                     # prefix -> "st0.N"
    pyspu: PyspuSettings = PyspuSettings()
    ignored: tuple[str, ...] = ()                       # hierarchies not read
    filename: str = field(default="<config>", compare=False)

    def describe(self) -> str:
        """A short summary for `spu gateway --check`: names, addresses, proposals,
        selectors, interfaces, routes. No key material."""
        return describe(self)


# --- entry points ------------------------------------------------------------------------

def load_gateway_config(path: str) -> GatewayConfig:
    """Read and check a configuration file. File names in it (certificates) are relative
    to the file's directory. ConfigError (a ValueError) with a one-line message."""
    name = os.path.basename(path) or path
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ConfigError(path, None, f"cannot read: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError(name, line, "not UTF-8 text") from None
    return parse_gateway_config(text, name, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_gateway_config(text: str, filename: str = "<config>", *,
                         base_dir: Optional[str] = None) -> GatewayConfig:
    """Check a configuration text (curly or set form). `base_dir` anchors relative file
    names (default: the working directory)."""
    tree = parse(text, filename, TABLE)
    root, ignored = check(tree, filename)
    cfg = _Builder(Ctx(filename), root, base_dir, ignored).build()
    if cfg.ignored:
        log.warning("%s: ignoring what pyspu does not use: %s", filename,
                    ", ".join(cfg.ignored))
    return cfg


# --- building ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _IKEProposal:
    text: str
    auth_method: str
    lifetime: int


@dataclass(frozen=True)
class _IPsecProposal:
    protocol: str
    encryption: Optional[str]
    authentication: Optional[str]
    lifetime: int
    kilobytes: int


def _empty() -> Section:
    return Section("", None, 0)


class _Builder:
    def __init__(self, ctx: Ctx, root: Section, base_dir: Optional[str],
                 ignored: list[str]):
        self.ctx, self.base_dir, self.ignored = ctx, base_dir, list(ignored)
        security = root.section("security") or _empty()
        self.ike = security.section("ike") or _empty()
        self.ipsec = security.section("ipsec") or _empty()
        self.interfaces = root.section("interfaces") or _empty()
        self.static = (root.section("routing-options") or _empty()).section("static") \
            or _empty()
        self.pyspu = root.section("pyspu") or _empty()

    def error(self, line: int, message: str) -> ConfigError:
        return self.ctx.error(line, message)

    def build(self) -> GatewayConfig:
        units = self.st0_units()
        settings_listen = self.pyspu.get("listen-address")
        ike_props = {n: self.ike_proposal(s) for n, s in self.ike.sections("proposal").items()}
        ipsec_props = {n: self.ipsec_proposal(s)
                       for n, s in self.ipsec.sections("proposal").items()}
        vpns, manual = {}, {}
        for name, sec in self.ipsec.sections("vpn").items():
            if sec.section("manual") is not None:
                manual[name] = self.manual_vpn(sec, units, settings_listen)
            else:
                vpns[name] = self.vpn(sec, units, ipsec_props)
        gateways = {}
        for name, sec in self.ike.sections("gateway").items():
            children = tuple(c for v in vpns.values() if v.gateway == name for c in v.children)
            gateways[name] = self.gateway(sec, ike_props, children, settings_listen)
        for vpn in vpns.values():
            if vpn.gateway not in gateways:
                sec = self.ipsec.sections("vpn")[vpn.name].section("ike")
                raise self.error(sec.line_of("gateway"), f"vpn {vpn.name}: gateway "
                                 f"'{vpn.gateway}' is not configured under security ike")
        routes = self.routes(units)
        return GatewayConfig(
            MappingProxyType(gateways), MappingProxyType(vpns), MappingProxyType(manual),
            MappingProxyType(units), MappingProxyType(routes),
            self.settings(gateways, manual), tuple(self.ignored), self.ctx.filename)

    # -- security ike --------------------------------------------------------------------
    def ike_proposal(self, sec: Section) -> _IKEProposal:
        for kw in ("authentication-method", "dh-group", "encryption-algorithm"):
            if kw not in sec.leaves:
                raise self.error(sec.line, f"{sec.path}: missing {kw}")
        try:
            text = ike_proposal_text(sec.get("encryption-algorithm"),
                                     sec.get("authentication-algorithm"), sec.get("dh-group"))
        except ValueError as err:
            raise self.error(sec.line_of("encryption-algorithm"), f"{sec.path}: {err}") \
                from None
        return _IKEProposal(text, sec.get("authentication-method"),
                            sec.get("lifetime-seconds", IKE_LIFETIME))

    def proposal_list(self, sec: Section, known: dict, what: str) -> list:
        names = sec.get("proposals")
        if names is None:
            raise self.error(sec.line, f"{sec.path}: missing proposals")
        line = sec.line_of("proposals")
        if len(names) > MAX_PROPOSALS:
            raise self.error(line, f"{sec.path}: at most {MAX_PROPOSALS} proposals, "
                             f"not {len(names)}")
        if len(set(names)) != len(names):
            raise self.error(line, f"{sec.path}: a proposal is listed twice")
        for n in names:
            if n not in known:
                raise self.error(line, f"{sec.path}: proposal '{n}' is not configured under "
                                 f"{what}")
        return [known[n] for n in names]

    def gateway(self, sec: Section, props: dict, children: tuple,
                settings_listen: Optional[IPAddress]) -> IKEGateway:
        name = sec.name
        pol_name = sec.get("ike-policy")
        if pol_name is None:
            raise self.error(sec.line, f"{sec.path}: missing ike-policy")
        policy = self.ike.sections("policy").get(pol_name)
        if policy is None:
            raise self.error(sec.line_of("ike-policy"), f"{sec.path}: ike-policy '{pol_name}'"
                             " is not configured")
        remotes = sec.get("address")
        if remotes is None:
            raise self.error(sec.line, f"{sec.path}: missing address (the peer)")
        if len(remotes) > 5:
            raise self.error(sec.line_of("address"), f"{sec.path}: at most 5 addresses")
        proposals = self.proposal_list(policy, props, "security ike proposal")
        methods = {p.auth_method for p in proposals}
        if len(methods) != 1:
            raise self.error(policy.line_of("proposals"), f"{policy.path}: its proposals mix "
                             "authentication methods")
        method = methods.pop()
        psk, credentials = self.policy_secret(policy, method)
        local = self.local_address(sec, remotes[0], settings_listen)
        local_id = self.identity(sec, "local-identity", credentials) \
            if "local-identity" in sec.leaves else None
        if local_id is None:
            if local is not None:
                local_id = Identity.inet(str(local))
            elif credentials is not None:
                local_id = Identity.from_certificate(credentials)
            else:
                raise self.error(sec.line, f"{sec.path}: no local-identity and no local "
                                 "address to default it to (add local-address)")
        remote_id = self.identity(sec, "remote-identity", None) \
            if "remote-identity" in sec.leaves else None
        dpd = sec.section("dead-peer-detection")
        nat_t = "no-nat-traversal" not in sec.leaves
        try:
            ike = IKEConfig(
                local_id, psk=psk, remote_id=remote_id, proposals=[p.text for p in proposals],
                children=children, remote_addrs=tuple(str(a) for a in remotes),
                dpd_interval=float(dpd.get("interval", DPD_INTERVAL)) if dpd else 0.0,
                nat_keepalive=float(sec.get("nat-keepalive", NAT_KEEPALIVE)) if nat_t else 0.0,
                lifetime_seconds=min(p.lifetime for p in proposals),
                credentials=credentials,
                auth_method="psk" if method == "pre-shared-keys" else method)
        except ValueError as err:
            raise self.error(sec.line, f"{sec.path}: {err}") from None
        return IKEGateway(name, ike, remotes[0], local, sec.get("version", "v2-only"),
                          pol_name, method, tuple(p.text for p in proposals),
                          policy.get("mode", "main"), nat_t,
                          dpd.get("threshold", DPD_THRESHOLD) if dpd else DPD_THRESHOLD,
                          sec.get("external-interface"), sec.line)

    def policy_secret(self, policy: Section, method: str):
        """(psk, credentials) of an IKE policy for its proposals' authentication method."""
        cert = policy.section("certificate")
        if method == "pre-shared-keys":
            if "pre-shared-key" not in policy.leaves:
                raise self.error(policy.line, f"{policy.path}: missing pre-shared-key "
                                 "(its proposals use pre-shared-keys)")
            return policy.get("pre-shared-key"), None
        if cert is None:
            raise self.error(policy.line, f"{policy.path}: missing certificate {{ }} (its "
                             f"proposals use {method})")
        files = []
        for kw in ("local-certificate", "private-key", "trusted-ca"):
            if kw not in cert.leaves:
                raise self.error(cert.line, f"{cert.path}: missing {kw}")
            files.append(self.file_name(cert.get(kw)))
        try:
            from .certs import Credentials      # only certificate configurations need it
        except ImportError as err:
            raise self.error(cert.line, f"{cert.path}: certificate support is unavailable "
                             f"({err})") from None
        try:
            return b"", Credentials.from_files(*files)
        except (ValueError, OSError) as err:
            raise self.error(cert.line, f"{cert.path}: {err}") from None

    def file_name(self, name: str) -> str:
        if self.base_dir is None or os.path.isabs(name):
            return name
        return os.path.join(self.base_dir, name)

    def identity(self, sec: Section, kw: str, credentials) -> Identity:
        kind, value = sec.get(kw)
        line = sec.line_of(kw)
        try:
            if kind == "inet":
                return Identity.inet(value)
            if kind == "hostname":
                return Identity.hostname(value)
            if kind == "user-at-hostname":
                if "@" not in value:
                    raise ValueError("expected user@host")
                return Identity.user_at_hostname(value)
            if value is not None:
                return Identity.distinguished_name(value)
            if kw == "remote-identity":
                raise ValueError("give the peer's distinguished name")
            if credentials is None:
                raise ValueError("needs certificate authentication (the name comes from "
                                 "the local certificate)")
            return Identity.from_certificate(credentials)
        except (ValueError, UnicodeError) as err:
            raise self.error(line, f"{kw} {kind}: {err}") from None

    def local_address(self, sec: Section, remote: IPAddress,
                      settings_listen: Optional[IPAddress]) -> Optional[IPAddress]:
        local = sec.get("local-address")
        if local is None and "external-interface" in sec.leaves:
            local = self.interface_address(sec.get("external-interface"), remote.version)
        if local is None and settings_listen is not None \
                and settings_listen.version == remote.version:
            local = settings_listen
        if local is not None and local.version != remote.version:
            raise self.error(sec.line_of("local-address"), f"{sec.path}: local and remote "
                             "addresses are of different families")
        return local

    def interface_address(self, ifname: str, version: int) -> Optional[IPAddress]:
        """The first address of that family on `ge-0/0/0.0` (unit 0 when not given)."""
        base, _, unit = ifname.partition(".")
        iface = self.interfaces.sections(base).get("")
        unit_sec = iface.sections("unit").get(unit or "0") if iface else None
        if unit_sec is None:
            return None
        family = "inet" if version == 4 else "inet6"
        fam = unit_sec.sections("family").get(family)
        for text, addr_sec in (fam.sections("address").items() if fam else ()):
            return interface_address(self.ctx, addr_sec.line, "address", text).ip
        return None

    # -- security ipsec ------------------------------------------------------------------
    def ipsec_proposal(self, sec: Section) -> _IPsecProposal:
        proto = sec.get("protocol", "esp")
        enc, auth = sec.get("encryption-algorithm"), sec.get("authentication-algorithm")
        try:
            if proto == "ah":
                if enc is not None:
                    raise ValueError("AH has no encryption-algorithm")
                ah_proposal_text(auth, None)
            else:
                esp_proposal_text(enc, auth, None)
        except ValueError as err:
            raise self.error(sec.line, f"{sec.path}: {err}") from None
        return _IPsecProposal(proto, enc, auth, sec.get("lifetime-seconds", IPSEC_LIFETIME),
                              sec.get("lifetime-kilobytes", 0))

    def vpn(self, sec: Section, units: dict, props: dict) -> IPsecVPN:
        name = sec.name
        ike = sec.section("ike")
        if ike is None:
            raise self.error(sec.line, f"{sec.path}: needs ike {{ }} or manual {{ }}")
        for kw in ("gateway", "ipsec-policy"):
            if kw not in ike.leaves:
                raise self.error(ike.line, f"{ike.path}: missing {kw}")
        unit = self.bind_unit(sec, units)
        pol_name = ike.get("ipsec-policy")
        policy = self.ipsec.sections("policy").get(pol_name)
        if policy is None:
            raise self.error(ike.line_of("ipsec-policy"), f"{sec.path}: ipsec-policy "
                             f"'{pol_name}' is not configured")
        proposals = self.proposal_list(policy, props, "security ipsec proposal")
        protocols = {p.protocol for p in proposals}
        if len(protocols) != 1:
            raise self.error(policy.line_of("proposals"), f"{policy.path}: its proposals mix "
                             "esp and ah")
        protocol = protocols.pop()
        pfs_sec = policy.section("perfect-forward-secrecy")
        pfs = pfs_sec.get("keys") if pfs_sec else None
        if pfs_sec is not None and pfs is None:
            raise self.error(pfs_sec.line, f"{pfs_sec.path}: missing keys")
        texts = tuple(ah_proposal_text(p.authentication, pfs) if protocol == "ah"
                      else esp_proposal_text(p.encryption, p.authentication, pfs)
                      for p in proposals)
        window = sec.get("anti-replay-window-size", REPLAY_WINDOW)
        seconds = min(p.lifetime for p in proposals)
        kbytes = min((p.kilobytes for p in proposals if p.kilobytes), default=0)
        children = self.children(sec, texts, window, seconds, kbytes, protocol)
        return IPsecVPN(name, ike.get("gateway"), pol_name, f"st0.{unit}", unit,
                        sec.get("establish-tunnels", "on-traffic"), protocol, texts,
                        DH_GROUPS[pfs][0] if pfs else None, children, window, sec.line)

    def children(self, sec: Section, texts: tuple, window: int, seconds: int,
                 kbytes: int, protocol: str = "esp") -> tuple[ChildConfig, ...]:
        selectors = sec.sections("traffic-selector")
        pairs = []
        for ts_name, ts in selectors.items():
            for kw in ("local-ip", "remote-ip"):
                if kw not in ts.leaves:
                    raise self.error(ts.line, f"{ts.path}: missing {kw}")
            local, remote = ts.get("local-ip"), ts.get("remote-ip")
            if local.version != remote.version:
                raise self.error(ts.line, f"{ts.path}: local-ip and remote-ip are of "
                                 "different families")
            pairs.append((f"{sec.name}:{ts_name}", local, remote, ts.line))
        if not pairs:
            pairs.append((sec.name, "0.0.0.0/0", "0.0.0.0/0", sec.line))
        out = []
        for child_name, local, remote, line in pairs:
            try:
                out.append(ChildConfig(child_name, texts, (str(local),), (str(remote),),
                                       window, seconds, kbytes, protocol))
            except ValueError as err:
                raise self.error(line, f"{sec.path}: {err}") from None
        return tuple(out)

    def bind_unit(self, sec: Section, units: dict) -> int:
        if "bind-interface" not in sec.leaves:
            raise self.error(sec.line, f"{sec.path}: missing bind-interface (pyspu VPNs are "
                             "route-based: st0.N)")
        unit = sec.get("bind-interface")
        if unit not in units:
            raise self.error(sec.line_of("bind-interface"), f"{sec.path}: bind-interface "
                             f"st0.{unit} has no 'interfaces st0 unit {unit}'")
        return unit

    def manual_vpn(self, sec: Section, units: dict,
                   settings_listen: Optional[IPAddress]) -> ManualVPN:
        man = sec.section("manual")
        if sec.section("ike") is not None:
            raise self.error(man.line, f"{sec.path}: ike {{ }} and manual {{ }} together")
        if sec.sections("traffic-selector"):
            raise self.error(man.line, f"{sec.path}: traffic-selector needs IKE (not manual "
                             "keys)")
        unit = self.bind_unit(sec, units)
        for kw in ("gateway", "protocol", "spi"):
            if kw not in man.leaves:
                raise self.error(man.line, f"{man.path}: missing {kw}")
        remote = man.get("gateway")
        local = None
        if "external-interface" in man.leaves:
            local = self.interface_address(man.get("external-interface"), remote.version)
        if local is None and settings_listen is not None \
                and settings_listen.version == remote.version:
            local = settings_listen
        if local is None:
            raise self.error(man.line, f"{man.path}: no local address (give the "
                             "external-interface an address under interfaces, or pyspu "
                             "listen-address)")
        window = sec.get("anti-replay-window-size", 0)
        inbound, outbound = manual_sas(self.ctx, man, local, remote, window)
        return ManualVPN(sec.name, f"st0.{unit}", unit, local, remote, man.get("protocol"),
                         inbound, outbound, sec.line)

    # -- interfaces, routes, pyspu -------------------------------------------------------
    def st0_units(self) -> dict[int, tuple[IPInterface, ...]]:
        st0 = self.interfaces.sections("st0").get("")
        units: dict[int, tuple[IPInterface, ...]] = {}
        for text, unit in (st0.sections("unit").items() if st0 else ()):
            addrs = []
            for fam in unit.sections("family").values():
                for addr_text, addr in fam.sections("address").items():
                    ifaddr = interface_address(self.ctx, addr.line, "address", addr_text)
                    if (ifaddr.version == 4) != (fam.name == "inet"):
                        raise self.error(addr.line, f"{addr.path}: not a family {fam.name} "
                                         "address")
                    addrs.append(ifaddr)
            units[int(text)] = tuple(addrs)
        return units

    def routes(self, units: dict) -> dict[IPNetwork, str]:
        out: dict[IPNetwork, str] = {}
        for text, route in self.static.sections("route").items():
            hops = route.get("next-hop", ())
            tunnels = [h for h in hops if h.startswith("st0")]
            if not tunnels:
                self.ignored.append(f"routing-options static route {text}")
                continue
            line = route.line_of("next-hop")
            if len(hops) > 1:
                raise self.error(line, f"{route.path}: a tunnel route takes one next-hop")
            unit = tunnel_unit(self.ctx, line, "next-hop", tunnels[0])
            if unit not in units:
                raise self.error(line, f"{route.path}: next-hop st0.{unit} has no "
                                 f"'interfaces st0 unit {unit}'")
            net = ipaddress.ip_network(text, strict=False)
            if net in out:
                raise self.error(route.line, f"{route.path}: route given twice")
            out[net] = f"st0.{unit}"
        return out

    def settings(self, gateways: dict, manual: dict) -> PyspuSettings:
        sec = self.pyspu
        tun = sec.get("tun-name", TUN_NAME)
        if not 0 < len(tun.encode()) <= MAX_IFNAME or "/" in tun or not tun.isprintable() \
                or any(c.isspace() for c in tun):
            raise self.error(sec.line_of("tun-name"), f"tun-name: {tun[:40]!r} is not a "
                             f"Linux interface name (1..{MAX_IFNAME} bytes, no '/' or spaces)")
        sock = sec.get("control-socket", CONTROL_SOCKET)
        listen = sec.get("listen-address")
        if listen is None:
            locals_ = {g.local_address for g in gateways.values() if g.local_address} | \
                {m.local_address for m in manual.values()}
            listen = locals_.pop() if len(locals_) == 1 else None
        return PyspuSettings(tun, sock, str(listen) if listen is not None else "0.0.0.0",
                             sec.get("workers", WORKERS),
                             bool(sec.get("force-udp-encapsulation", False)))
