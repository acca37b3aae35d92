#!/usr/bin/python3
"""Logging relay used once to record the frozen control transcripts in this directory.

Usage: capture_relay.py LISTEN_PORT SERVER_PORT OUT_FILE
Relays TCP and UDP on 127.0.0.1:LISTEN_PORT to 127.0.0.1:SERVER_PORT (an `iperf3 -s`). The first
TCP connection is the control connection; every read on it is logged, in the order the relay saw
it, as `C <hex>` (client -> server) or `S <hex>` (server -> client). Because a chunk is logged
before it is forwarded, the log order respects causality: a reply always follows what caused it.
The file is written when the control connection closes, then the relay exits.
"""
import asyncio
import sys

LISTEN_PORT, SERVER_PORT, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
log = []
control_seen = False
done = None


async def pump(reader, writer, tag):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if tag is not None:
                log.append((tag, data))
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def on_tcp(c_reader, c_writer):
    global control_seen
    is_control = not control_seen
    control_seen = True
    s_reader, s_writer = await asyncio.open_connection("127.0.0.1", SERVER_PORT)
    await asyncio.gather(pump(c_reader, s_writer, "C" if is_control else None),
                         pump(s_reader, c_writer, "S" if is_control else None))
    c_writer.close()
    s_writer.close()
    if is_control:
        with open(OUT, "w") as f:
            for tag, data in log:
                f.write(f"{tag} {data.hex()}\n")
        done.set_result(None)


class UdpUpstream(asyncio.DatagramProtocol):
    def __init__(self, front, client_addr):
        self.front, self.client_addr = front, client_addr

    def datagram_received(self, data, addr):
        self.front.transport.sendto(data, self.client_addr)


class UdpFront(asyncio.DatagramProtocol):
    def __init__(self):
        self.flows = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        flow = self.flows.get(addr)
        if flow is None:
            flow = self.flows[addr] = []
            asyncio.ensure_future(self.open(addr, flow, data))
        elif isinstance(flow, list):
            flow.append(data)
        else:
            flow.sendto(data)

    async def open(self, addr, pending, first):
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UdpUpstream(self, addr), remote_addr=("127.0.0.1", SERVER_PORT))
        transport.sendto(first)
        for data in pending:
            transport.sendto(data)
        self.flows[addr] = transport


async def main():
    global done
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    server = await asyncio.start_server(on_tcp, "127.0.0.1", LISTEN_PORT)
    await loop.create_datagram_endpoint(UdpFront, local_addr=("127.0.0.1", LISTEN_PORT))
    async with server:
        await done


asyncio.run(main())
