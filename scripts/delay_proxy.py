"""A TCP proxy that delays every chunk by a fixed time in each direction: a
network with a round trip of twice that, for benchmarks on one machine
(this kernel has no netem). Usage: python3 scripts/delay_proxy.py
LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS. Order is kept: a chunk leaves
DELAY_MS after it arrived, after every chunk before it."""

import asyncio
import sys


async def pipe(reader, writer, delay):
    queue = asyncio.Queue()

    async def send():
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((loop.time() + delay, data))
    finally:
        queue.put_nowait((0, None))
        await sender


async def main():
    port, host, target, delay_ms = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    delay = delay_ms / 1000.0

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(host, target)
        except OSError:
            client_w.close()
            return
        for s in (client_w, server_w):
            sock = s.get_extra_info("socket")
            if sock is not None:
                import socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            pipe(client_r, server_w, delay), pipe(server_r, client_w, delay), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"delay proxy: 127.0.0.1:{port} -> {host}:{target}, {delay_ms} ms each way", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
