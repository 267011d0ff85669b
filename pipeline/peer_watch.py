"""Whether the peer of a connecting ZeroMQ socket is there (socket monitor events), so a sender
can drop and count frames for a worker that is down instead of queueing or blocking on it.

A killed process's kernel closes its connections, so the sender sees the disconnect within
milliseconds; ZeroMQ reconnects by itself (``RECONNECT_IVL``). With ``IMMEDIATE`` set, nothing
is queued for a connection that is not complete, so a dead worker holds at most what was in
flight when it died. A host that vanishes without closing its connections (power, cable) is
noticed by TCP keepalive only while the link is idle; while frames are outstanding the sends
time out instead and count as ``inference_busy``: still bounded and counted.

The monitor's events must be read, and the monitor stopped before its socket is dropped: libzmq's
I/O thread writes each event into the monitor's pipe and blocks when the pipe is full (~1000
events: a dead worker's reconnect attempts fill it in minutes) or its reader is gone, and every
socket of the process's context then stalls. So the capture drains every watch on every loop, not
only those it sends to, and :meth:`PeerWatch.close` stops the monitor before closing its reader.

ZMTP heartbeats are deliberately not used: a PING queues behind the frames already in the
socket buffers, so a busy-but-alive worker misses the timeout and gets disconnected again and
again (measured in the soak: a reconnect every ~4 s under load, with fds and RSS creeping up).
"""

from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import recv_monitor_message

logger = logging.getLogger(__name__)

KEEPALIVE_IDLE_S, KEEPALIVE_INTVL_S, KEEPALIVE_CNT = 10, 2, 3
_UP = zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_DOWN = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL \
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH


def prepare(sock: zmq.Socket) -> None:
    """Options for a socket whose peer may die: no queueing to incomplete connections, TCP keepalive.

    Call before ``connect``: the monitor (which :class:`PeerWatch` reads) only sees later events."""
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
    sock.get_monitor_socket(_UP | _DOWN)  # pyzmq keeps it on the socket; PeerWatch gets the same one


class PeerWatch:
    """Tracks the connection state of one connecting socket from its monitor events.

    Call :meth:`up` from the thread that owns the socket (monitor sockets are not thread-safe).
    """

    def __init__(self, sock: zmq.Socket, name: str) -> None:
        self.name = name
        self.sock = sock
        self.monitor = sock.get_monitor_socket(_UP | _DOWN)
        self._up = False

    def up(self) -> bool:
        """Drain pending events; True while the peer is connected."""
        while self.monitor.poll(0):
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            was = self._up
            if event["event"] & _UP:
                self._up = True
            elif event["event"] & _DOWN:
                self._up = False
            if was != self._up:
                log = logger.info if self._up else logger.warning
                log("%s %s", self.name, "connected" if self._up else "is down; its frames are dropped "
                    "(vidwatch_frames_dropped_total{reason=\"worker_down\"}) until it is back")
        return self._up

    def close(self) -> None:
        """Stop the monitor, then close its reader (never the other way round, see the module doc)."""
        if not self.sock.closed:
            self.sock.disable_monitor()
        self.monitor.close(linger=0)
