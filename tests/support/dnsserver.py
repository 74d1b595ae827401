"""A small authoritative DNS server for tests, on 127.0.0.1 only.

`DnsTestServer` answers over UDP and TCP on one ephemeral port from records given as zone-file
text or as Python dicts. It behaves like a recursive resolver that knows the whole (test)
internet: names it has no records for get NXDOMAIN, names that exist without the asked type get
an empty NOERROR answer, and CNAMEs are chased within its data. Names listed in `servfail` get
SERVFAIL. UDP answers larger than the client's buffer (512 bytes without EDNS, or
`udp_payload_limit`) are truncated so the client retries over TCP.

`BlackHoleServer` binds a UDP port on 127.0.0.1 and never answers, for timeout tests.

Both run in a background thread, so they work from sync and async tests alike; use them as
`with` or `async with` context managers (or call start()/stop()).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, cast

from dnslib import (
    EDNS0,
    QTYPE,
    RCODE,
    RR,
    TXT,
    DNSRecord,
)

HOST = "127.0.0.1"

# owner name -> record type -> one value or several, in zone-file rdata syntax except TXT,
# whose values are the plain text (split into 255-byte strings automatically).
RecordsDict = Mapping[str, Mapping[str, str | Sequence[str]]]


@dataclass(frozen=True, slots=True)
class QueryLogEntry:
    name: str
    rdtype: str
    transport: str  # "udp" or "tcp"


def _absolute(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _txt_rdata(text: str) -> TXT:
    raw = text.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return TXT(chunks)


def records_from_dict(records: RecordsDict, *, ttl: int = 300) -> list[RR]:
    """dnslib RRs from {"name": {"TYPE": value | [values]}}; names are absolute."""
    out: list[RR] = []
    for owner, types in records.items():
        name = _absolute(owner)
        for rdtype, values in types.items():
            items = [values] if isinstance(values, str) else list(values)
            rdtype = rdtype.upper()
            for value in items:
                if rdtype == "TXT":
                    out.append(RR(name, QTYPE.TXT, ttl=ttl, rdata=_txt_rdata(value)))
                else:
                    out.extend(RR.fromZone(f"{name} {ttl} IN {rdtype} {value}"))
    return out


def records_from_zone(text: str, *, origin: str = "", ttl: int = 300) -> list[RR]:
    """dnslib RRs from zone-file text ($ORIGIN, $TTL, @ and relative names work)."""
    return list(RR.fromZone(text, origin=origin, ttl=ttl))


class _Background:
    """An asyncio loop in a daemon thread, opened by `_open` and closed by `_close`."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to start()
                self._startup_error = exc
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=5.0):
            raise RuntimeError(f"{type(self).__name__} did not start within 5 s")
        if self._startup_error is not None:
            self._thread.join(timeout=5.0)
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._startup_error

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} did not stop within 5 s")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsTestServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        reply = self._server.handle(data, "udp")
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


class DnsTestServer(_Background):
    """Authoritative test DNS server on 127.0.0.1:<ephemeral port>, UDP and TCP.

    zones: zone-file texts and/or record dicts (see `records_from_dict`).
    servfail: names (any type) answered with SERVFAIL.
    udp_payload_limit: truncate UDP answers above this size (forces TCP retries).
    """

    host = HOST

    def __init__(
        self,
        *zones: str | RecordsDict,
        servfail: Iterable[str] = (),
        udp_payload_limit: int | None = None,
        ttl: int = 300,
    ) -> None:
        super().__init__()
        self._records: dict[str, list[RR]] = {}
        self._servfail = {_absolute(n) for n in servfail}
        self._udp_payload_limit = udp_payload_limit
        self._ttl = ttl
        self._lock = threading.Lock()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.queries: list[QueryLogEntry] = []
        for zone in zones:
            if isinstance(zone, str):
                self.add_rrs(records_from_zone(zone, ttl=ttl))
            else:
                self.add_rrs(records_from_dict(zone, ttl=ttl))

    # -- data ---------------------------------------------------------------------------------

    def add_rrs(self, rrs: Iterable[RR]) -> None:
        with self._lock:
            for rr in rrs:
                self._records.setdefault(_absolute(str(rr.rname)), []).append(rr)

    def add_records(self, records: RecordsDict) -> None:
        self.add_rrs(records_from_dict(records, ttl=self._ttl))

    def add_zone(self, text: str, *, origin: str = "") -> None:
        self.add_rrs(records_from_zone(text, origin=origin, ttl=self._ttl))

    @property
    def nameservers(self) -> list[str]:
        return [self.host]

    def queried(self, name: str, rdtype: str | None = None) -> bool:
        """Whether a query for `name` (and `rdtype`, when given) has arrived."""
        wanted = _absolute(name)
        with self._lock:
            return any(
                q.name == wanted and (rdtype is None or q.rdtype == rdtype.upper())
                for q in self.queries
            )

    # -- answering ----------------------------------------------------------------------------

    def handle(self, data: bytes, transport: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types for garbage; drop it like a server
            return None
        reply = request.reply()
        if request.header.opcode != 0 or len(request.questions) != 1:
            reply.header.rcode = RCODE.NOTIMP
            return bytes(reply.pack())
        question = request.q
        name = _absolute(str(question.qname))
        qtype = question.qtype
        with self._lock:
            self.queries.append(QueryLogEntry(name, str(QTYPE.get(qtype, qtype)), transport))
            self._fill(reply, name, qtype)
        opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=4096))
        packed = bytes(reply.pack())
        if transport == "udp":
            limit = max(512, int(opt.rclass)) if opt is not None else 512
            if self._udp_payload_limit is not None:
                limit = min(limit, self._udp_payload_limit)
            if len(packed) > limit:
                truncated = request.reply()
                truncated.header.tc = 1
                return bytes(truncated.pack())
        return packed

    def _exists(self, name: str) -> bool:
        return name in self._records or any(n.endswith("." + name) for n in self._records)

    def _fill(self, reply: DNSRecord, name: str, qtype: int) -> None:
        if name in self._servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return
        for _ in range(8):  # CNAME chase, bounded
            rrs = self._records.get(name, [])
            matching = [rr for rr in rrs if rr.rtype == qtype or qtype == QTYPE.ANY]
            if matching:
                for rr in matching:
                    reply.add_answer(rr)
                return
            cname = next((rr for rr in rrs if rr.rtype == QTYPE.CNAME), None)
            if cname is None:
                break
            reply.add_answer(cname)
            name = _absolute(str(cname.rdata.label))
            if name in self._servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return
        if not self._exists(name):
            reply.header.rcode = RCODE.NXDOMAIN

    # -- sockets ------------------------------------------------------------------------------

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for _ in range(20):  # UDP and TCP need the same port; retry if TCP's is taken
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(HOST, 0), family=socket.AF_INET
            )
            port = int(udp.get_extra_info("sockname")[1])
            try:
                tcp = await asyncio.start_server(self._serve_tcp, HOST, port)
            except OSError as exc:
                last_error = exc
                udp.close()
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            return
        raise OSError(f"could not bind UDP and TCP to one port on {HOST}") from last_error

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.add(writer)
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), timeout=5.0)
                    body = await asyncio.wait_for(
                        reader.readexactly(int.from_bytes(header, "big")), timeout=5.0
                    )
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                reply = self.handle(body, "tcp")
                if reply is None:
                    return
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        finally:
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):
                writer.close()
            await self._tcp.wait_closed()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class BlackHoleServer(_Background):
    """A UDP socket on 127.0.0.1:<ephemeral port> that reads queries and never answers."""

    host = HOST

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self.received = 0
        self._udp: asyncio.DatagramTransport | None = None

    @property
    def nameservers(self) -> list[str]:
        return [self.host]

    async def _open(self) -> None:
        outer = self

        class _Swallow(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
                outer.received += 1

        udp, _protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            _Swallow, local_addr=(HOST, 0), family=socket.AF_INET
        )
        self._udp = udp
        self.port = int(udp.get_extra_info("sockname")[1])

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()


__all__ = [
    "BlackHoleServer",
    "DnsTestServer",
    "QueryLogEntry",
    "RecordsDict",
    "records_from_dict",
    "records_from_zone",
]
