"""SPF (RFC 7208): record parsing, the include/redirect tree, lookup counting and evaluation.

Evaluation implements check_host() for ip4, ip6, a, mx, include, exists, all and redirect.
Macros (%{...}) are not expanded: terms using them are counted but never match, and are listed
in `SpfNode.notes`. ptr is counted but never matches (RFC 7208 says not to use it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field

import dns.rdtypes.ANY.MX

from mail.dns_lookup import DnsClient, IPAddress

LOOKUP_LIMIT = 10  # RFC 7208 section 4.6.4
MAX_DEPTH = 10  # include/redirect nesting we follow
MAX_MX_HOSTS = 10  # RFC 7208 section 4.6.4: more MX names in an mx mechanism is a permerror

DNS_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
MECHANISMS = DNS_MECHANISMS | {"all", "ip4", "ip6"}
QUALIFIER_RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}

_SPF_PREFIX = re.compile(r"v=spf1(?:\s|$)", re.IGNORECASE)
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
_DOMAIN_CIDR = re.compile(r"(?::([^/]+))?(?:/(\d+))?(?://(\d+))?")


class SpfSyntaxError(ValueError):
    pass


def is_spf_record(text: str) -> bool:
    return bool(_SPF_PREFIX.match(text.strip()))


@dataclass(frozen=True, slots=True)
class SpfTerm:
    text: str
    name: str  # mechanism or modifier name, lower-case
    qualifier: str = "+"  # mechanisms only
    target: str | None = None  # domain-spec (a, mx, include, exists, ptr) or modifier value
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4/ip6
    cidr4: int = 32
    cidr6: int = 128
    modifier: bool = False

    @property
    def counts_lookup(self) -> bool:
        return (not self.modifier and self.name in DNS_MECHANISMS) or (
            self.modifier and self.name == "redirect"
        )

    @property
    def has_macro(self) -> bool:
        return self.target is not None and "%" in self.target


@dataclass(frozen=True, slots=True)
class SpfRecord:
    text: str
    mechanisms: tuple[SpfTerm, ...]
    redirect: str | None
    all_term: SpfTerm | None


def _parse_term(text: str) -> SpfTerm:
    modifier = _MODIFIER.fullmatch(text)
    if modifier:
        name = modifier.group(1).lower()
        return SpfTerm(text, name, qualifier="", target=modifier.group(2), modifier=True)
    qualifier = "+"
    body = text
    if body[:1] in QUALIFIER_RESULTS:
        qualifier, body = body[0], body[1:]
    name = re.split(r"[:/]", body, maxsplit=1)[0].lower()
    rest = body[len(name) :]
    if name not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {text!r}")
    if name == "all":
        if rest:
            raise SpfSyntaxError(f"'all' takes no arguments: {text!r}")
        return SpfTerm(text, name, qualifier)
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{name} needs an address: {text!r}")
        try:
            network = ipaddress.ip_network(rest[1:], strict=False)
        except ValueError:
            raise SpfSyntaxError(f"invalid address in {text!r}") from None
        if network.version != (4 if name == "ip4" else 6):
            raise SpfSyntaxError(f"{name} with an IPv{network.version} address: {text!r}")
        return SpfTerm(text, name, qualifier, network=network)
    match = _DOMAIN_CIDR.fullmatch(rest)
    if match is None:
        raise SpfSyntaxError(f"cannot parse {text!r}")
    target, cidr4, cidr6 = match.groups()
    if name in ("include", "exists") and not target:
        raise SpfSyntaxError(f"{name} needs a domain: {text!r}")
    if name in ("include", "exists", "ptr") and (cidr4 or cidr6):
        raise SpfSyntaxError(f"{name} takes no prefix length: {text!r}")
    c4 = int(cidr4) if cidr4 else 32
    c6 = int(cidr6) if cidr6 else 128
    if c4 > 32 or c6 > 128:
        raise SpfSyntaxError(f"prefix length out of range in {text!r}")
    if target is not None:
        target = target.lower().rstrip(".")
    return SpfTerm(text, name, qualifier, target=target, cidr4=c4, cidr6=c6)


def parse_spf(text: str) -> SpfRecord:
    """Parse one `v=spf1 ...` record; raises SpfSyntaxError (a ValueError) when invalid."""
    if not is_spf_record(text):
        raise SpfSyntaxError("not an SPF record (must start with v=spf1)")
    terms = [_parse_term(t) for t in text.split()[1:]]
    mechanisms = tuple(t for t in terms if not t.modifier)
    redirects = [t for t in terms if t.modifier and t.name == "redirect"]
    if len(redirects) > 1:
        raise SpfSyntaxError("more than one redirect= modifier")
    if len([t for t in terms if t.modifier and t.name == "exp"]) > 1:
        raise SpfSyntaxError("more than one exp= modifier")
    all_term = next((t for t in mechanisms if t.name == "all"), None)
    redirect = None
    if redirects and redirects[0].target:
        redirect = redirects[0].target.lower().rstrip(".")
    return SpfRecord(text.strip(), mechanisms, redirect, all_term)


@dataclass(slots=True)
class SpfNode:
    """The SPF record of one domain, with the records it includes or redirects to."""

    domain: str
    depth: int
    records: list[str] = field(default_factory=list)
    record: SpfRecord | None = None
    problem: str | None = None  # why this node cannot be used
    problem_kind: str | None = None  # "permerror" (record broken/missing) or "temperror" (DNS)
    absent: bool = False  # the domain publishes no SPF record at all
    children: dict[str, SpfNode] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def follows_redirect(self) -> bool:
        return (
            self.record is not None
            and self.record.redirect is not None
            and (self.record.all_term is None)
        )

    def targets(self) -> list[str]:
        """include targets in order, then the redirect target when it applies."""
        if self.record is None:
            return []
        out = [
            t.target
            for t in self.record.mechanisms
            if t.name == "include" and t.target and not t.has_macro
        ]
        if self.follows_redirect and self.record.redirect and "%" not in self.record.redirect:
            out.append(self.record.redirect)
        return out

    def lookup_count(self) -> int:
        """DNS-querying terms here and, recursively, in everything included or redirected to."""
        if self.record is None:
            return 0
        total = 0
        for term in self.record.mechanisms:
            if term.counts_lookup:
                total += 1
                if term.name == "include" and term.target in self.children:
                    total += self.children[term.target].lookup_count()
        if self.follows_redirect and self.record.redirect:
            total += 1
            child = self.children.get(self.record.redirect)
            if child is not None:
                total += child.lookup_count()
        return total

    def walk(self) -> list[SpfNode]:
        out = [self]
        for child in self.children.values():
            out.extend(child.walk())
        return out

    def breakdown(self) -> list[dict[str, object]]:
        """Per-domain lookup counts, JSON-safe, for RecordCheck.details."""
        rows: list[dict[str, object]] = []
        seen: set[str] = set()
        for node in self.walk():
            if node.domain in seen or node.record is None:
                continue
            seen.add(node.domain)
            own = sum(1 for t in node.record.mechanisms if t.counts_lookup)
            own += 1 if node.follows_redirect else 0
            rows.append({"domain": node.domain, "lookups": own, "record": node.record.text})
        return rows


def select_spf(texts: list[str]) -> list[str]:
    return [t.strip() for t in texts if is_spf_record(t)]


MAX_NODES = 40  # records fetched for one tree; far past the lookup limit, stops runaway fan-out


async def build_tree(
    client: DnsClient,
    domain: str,
    *,
    depth: int = 0,
    chain: tuple[str, ...] = (),
    budget: list[int] | None = None,
) -> SpfNode:
    """Fetch the SPF record of `domain` and, recursively, of its includes and redirect."""
    budget = [MAX_NODES] if budget is None else budget
    node = SpfNode(domain, depth)
    if budget[0] <= 0:
        node.problem = f"not followed: more than {MAX_NODES} nested SPF records"
        node.problem_kind = "permerror"
        return node
    budget[0] -= 1
    lookup = await client.lookup(domain, "TXT")
    if lookup.failed:
        node.problem, node.problem_kind = lookup.describe_failure(), "temperror"
        return node
    node.records = select_spf(lookup.texts())
    if not node.records:
        node.problem, node.problem_kind = f"{domain} has no SPF record", "permerror"
        node.absent = True
        return node
    if len(node.records) > 1:
        node.problem = f"{domain} has {len(node.records)} SPF records"
        node.problem_kind = "permerror"
        return node
    try:
        node.record = parse_spf(node.records[0])
    except SpfSyntaxError as exc:
        node.problem, node.problem_kind = f"SPF record of {domain}: {exc}", "permerror"
        return node
    for term in node.record.mechanisms:
        if term.has_macro:
            node.notes.append(f"{term.text}: macros are not evaluated")
        if term.name == "ptr":
            node.notes.append(f"{term.text}: ptr is not evaluated")
    targets = list(dict.fromkeys(node.targets()))
    loops = [t for t in targets if t in chain or t == domain]
    for target in loops:
        loop_node = SpfNode(target, depth + 1)
        loop_node.problem = f"include/redirect loop: {' -> '.join((*chain, domain, target))}"
        loop_node.problem_kind = "permerror"
        node.children[target] = loop_node
    follow = [t for t in targets if t not in loops]
    if follow and depth + 1 >= MAX_DEPTH:
        for target in follow:
            deep = SpfNode(target, depth + 1)
            deep.problem = f"includes nested more than {MAX_DEPTH} deep at {target}"
            deep.problem_kind = "permerror"
            node.children[target] = deep
        return node
    children = await asyncio.gather(
        *(
            build_tree(client, t, depth=depth + 1, chain=(*chain, domain), budget=budget)
            for t in follow
        )
    )
    for target, child in zip(follow, children, strict=True):
        node.children[target] = child
    return node


class _SpfError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    term: str | None  # the mechanism that matched, e.g. "include:_spf.example.com"
    explanation: str = ""


def _in_network(address: IPAddress, target: IPAddress, cidr4: int, cidr6: int) -> bool:
    if address.version != target.version:
        return False
    prefix = cidr4 if address.version == 4 else cidr6
    return address in ipaddress.ip_network(f"{target}/{prefix}", strict=False)


async def _host_matches(client: DnsClient, host: str, address: IPAddress, term: SpfTerm) -> bool:
    rdtype = "A" if address.version == 4 else "AAAA"
    lookup = await client.lookup(host, rdtype)
    if lookup.failed:
        raise _SpfError("temperror", lookup.describe_failure())
    for rdata in lookup.rdatas:
        try:
            candidate = ipaddress.ip_address(rdata.to_text())
        except ValueError:
            continue
        if _in_network(address, candidate, term.cidr4, term.cidr6):
            return True
    return False


async def _matches(client: DnsClient, node: SpfNode, term: SpfTerm, address: IPAddress) -> bool:
    name = term.name
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        assert term.network is not None
        return address.version == term.network.version and address in term.network
    if term.has_macro or name == "ptr":
        return False
    target = term.target or node.domain
    if name == "a":
        return await _host_matches(client, target, address, term)
    if name == "mx":
        lookup = await client.lookup(target, "MX")
        if lookup.failed:
            raise _SpfError("temperror", lookup.describe_failure())
        hosts = [
            r.exchange.to_text(omit_final_dot=True)
            for r in lookup.rdatas
            if isinstance(r, dns.rdtypes.ANY.MX.MX) and not r.exchange.is_wild()
        ]
        hosts = [h for h in hosts if h not in ("", ".")]
        if len(hosts) > MAX_MX_HOSTS:
            raise _SpfError("permerror", f"{term.text}: {target} has more than 10 MX hosts")
        for host in hosts:
            if await _host_matches(client, host, address, term):
                return True
        return False
    if name == "exists":
        lookup = await client.lookup(target, "A")
        if lookup.failed:
            raise _SpfError("temperror", lookup.describe_failure())
        return lookup.found
    if name == "include":
        child = node.children.get(target)
        if child is None:
            return False
        result = await evaluate(client, child, address)
        if result.result == "pass":
            return True
        if result.result in ("temperror", "permerror"):
            raise _SpfError(result.result, result.explanation)
        if result.result == "none":
            raise _SpfError("permerror", f"{term.text}: {target} has no SPF record")
        return False
    raise _SpfError("permerror", f"unsupported mechanism {term.text!r}")


async def evaluate(client: DnsClient, node: SpfNode, address: IPAddress) -> SpfResult:
    """check_host() for `address` against the (already fetched) tree rooted at `node`."""
    if node.record is None:
        if node.problem_kind == "temperror":
            return SpfResult("temperror", None, node.problem or "")
        if node.absent:
            return SpfResult("none", None, node.problem or "")
        return SpfResult("permerror", None, node.problem or "")
    for term in node.record.mechanisms:
        try:
            matched = await _matches(client, node, term, address)
        except _SpfError as exc:
            return SpfResult(exc.kind, term.text, exc.message)
        if matched:
            return SpfResult(QUALIFIER_RESULTS[term.qualifier], term.text)
    if node.follows_redirect and node.record.redirect:
        child = node.children.get(node.record.redirect)
        if child is None:
            return SpfResult("neutral", None, "redirect target not evaluated (macro)")
        result = await evaluate(client, child, address)
        if result.result == "none":
            return SpfResult("permerror", f"redirect={node.record.redirect}", result.explanation)
        return result
    return SpfResult("neutral", None)


def effective_all(node: SpfNode) -> SpfTerm | None:
    """The `all` that ends evaluation: this record's, or the one reached through redirect."""
    seen: set[str] = set()
    current: SpfNode | None = node
    while current is not None and current.record is not None and current.domain not in seen:
        seen.add(current.domain)
        if current.record.all_term is not None:
            return current.record.all_term
        redirect = current.record.redirect
        current = current.children.get(redirect) if redirect else None
    return None
