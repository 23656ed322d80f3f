"""Both directions of a stream call (docs/PROTOCOL.md section 8): reading
the server's items as an iterator that grants credit as it is read, and
sending the caller's items within the credit the server grants."""

import struct
import threading

from .connection import KIND_END, answer, header_frame, items_frame
from .codec import ArgumentError
from .errors import ConnectionClosed, RemoteError, RpcError, status_error

# What this client lets the server have in flight on one stream: the
# 65,536 bytes every stream starts with, plus one grant at the start.
WINDOW = 262144


class Reading:
    """What a reader of a server stream has taken so far, the same for the
    threaded and the asyncio streams: the items message being read, and
    the bytes read since the last grant of credit."""

    def __init__(self, call, codec, item_format):
        self._call, self._codec, self._format = call, codec, item_format
        self._message, self._pos, self.left = None, 0, 0
        self._taken = 0

    def take(self):
        """Moves on to the call's next items message; returns the credit
        to grant the server now (0 for none yet)."""
        message, pos = self._call.items.popleft()
        (self.left,) = struct.unpack_from("<I", message, pos)
        self._message, self._pos = message, pos + 4
        self._taken += len(message)
        if self._taken < WINDOW // 2:
            return 0
        grant, self._taken = self._taken, 0
        return grant

    def item(self):
        """The next item of the message; `RpcError` if it does not decode
        or the message has bytes after its last item."""
        self.left -= 1
        value, self._pos = self._codec.read(self._message, self._pos, self._format, "a stream item")
        if self.left == 0 and self._pos != len(self._message):
            raise RpcError("the server sent an items message with bytes left over")
        return value


class Stream:
    """The items of a stream the server sends, as an iterator.

    It ends when the server's stream does; an error that ends it is raised
    from `next`. `close()` (or leaving a `with` block) before then cancels
    the call."""

    def __init__(self, connection, call_id, call, codec, item_format, error_format, deadline):
        self._connection, self._id, self._call = connection, call_id, call
        self._codec, self._error_format = codec, error_format
        self._deadline = deadline
        self._reading = Reading(call, codec, item_format)
        self._done = False
        self.sender = None  # the thread sending our stream, for a bidi call

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __next__(self):
        while self._reading.left == 0:
            if self._done:
                raise StopIteration
            self._next_message()
        try:
            return self._reading.item()
        except RpcError:
            self.close()
            raise

    def _next_message(self):
        call = self._call
        self._connection.wait(call, lambda c: c.items or c.answer is not None, self._deadline, "stream item")
        if call.items:
            grant = self._reading.take()
            if grant:
                self._connection.grant(self._id, call, grant)
            return
        self._done = True
        self._connection.forget(self._id)
        sender = self.sender
        if sender is not None and sender.error is not None:
            raise sender.error
        end(answer(call), self._codec, self._error_format)

    def close(self):
        """Stops reading: the server stops the call (status 10 on its
        side). Does nothing once the stream has ended."""
        if not self._done:
            self._done = True
            self._reading.left = 0
            self._connection.cancel(self._id)

    def __del__(self):
        # Never `close()` here: the collector may run on a thread that holds
        # the connection's locks.
        if not self._done:
            self._done = True
            self._connection.abandon(self._id)


def end(answer, codec, error_format):
    """What the response that ends (or refuses to open) a stream means:
    returns for a clean end, raises for anything else."""
    status, body = answer
    if status != 0:
        raise status_error(status, body)
    if error_format is not None and body[:1] == b"\x01":
        value, _ = codec.read(body, 1, error_format, "the error")
        raise RemoteError(value)


class Sender:
    """Sends the caller's items for one call, each in an items message of
    its own, within the server's credit; then end. Stops early when the
    server answers or says stop."""

    def __init__(self, connection, call_id, call, codec, item_format, deadline, where):
        self._connection, self._id, self._call = connection, call_id, call
        self._codec, self._format, self._deadline, self._where = codec, item_format, deadline, where
        self.error = None
        self.thread = None

    def run(self, items):
        call = self._call
        try:
            for index, item in enumerate(items):
                value = bytearray()
                self._codec.encode(item, self._format, value, "%s[%d]" % (self._where, index))
                frame = items_frame(self._id, 1, value)
                if len(frame) - 4 > self._connection.max_frame_length:
                    raise ArgumentError("%s[%d] is %d bytes encoded, over the frame limit of %d"
                                        % (self._where, index, len(frame) - 4, self._connection.max_frame_length))
                # What has arrived first, without waiting: an answer or a
                # stop must end the stream at once, not when credit runs out.
                done = lambda c: c.stopped or c.answer is not None  # noqa: E731
                if not self._connection.wait(call, done, self._deadline, block=False):
                    self._connection.wait(call, lambda c: c.credit > 0 or done(c), self._deadline, "credit to send")
                if done(call):
                    return
                # Spent before it goes: the server counts the same bytes,
                # the payload's length.
                self._connection.spend(call, len(frame) - 4)
                self._connection.send(frame)
            if not call.stopped and call.answer is None:
                self._connection.send(header_frame(KIND_END, self._id))
        except ConnectionClosed as e:
            self.error = e  # nothing to cancel on a closed connection
        except Exception as e:  # noqa: BLE001 - the caller sees it
            # The call stays known, so that the server's answer to the
            # cancel ends the reader's wait; the reader then raises this.
            self.error = e
            self._connection.cancel(self._id, forget=False)

    def start(self, items):
        """Runs in a thread of its own, for a bidi call."""
        self.thread = threading.Thread(target=self.run, args=(items,), daemon=True)
        self.thread.start()
        return self.thread
