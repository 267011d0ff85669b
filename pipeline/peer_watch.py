"""Whether the peer of a connecting ZeroMQ socket is there (socket monitor events), so a sender
can drop and count frames for a worker that is down instead of queueing or blocking on it.

ZeroMQ reconnects by itself (``RECONNECT_IVL``); a peer that died without closing its TCP
connection (host lost, cable cut) is noticed by ZMTP heartbeats (``HEARTBEAT_IVL``/``TIMEOUT``).
With ``IMMEDIATE`` set, nothing is queued for a connection that is not complete, so a dead
worker holds at most what was in flight when it died.
"""

from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import recv_monitor_message

logger = logging.getLogger(__name__)

HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
_UP = zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_DOWN = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL \
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH


def prepare(sock: zmq.Socket) -> None:
    """Options for a socket whose peer may die: no queueing to incomplete connections, heartbeats.

    Call before ``connect``: the monitor (which :class:`PeerWatch` reads) only sees later events."""
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.get_monitor_socket(_UP | _DOWN)  # pyzmq keeps it on the socket; PeerWatch gets the same one


class PeerWatch:
    """Tracks the connection state of one connecting socket from its monitor events.

    Call :meth:`up` from the thread that owns the socket (monitor sockets are not thread-safe).
    """

    def __init__(self, sock: zmq.Socket, name: str) -> None:
        self.name = name
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
        self.monitor.close(linger=0)
