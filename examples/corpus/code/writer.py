"""The Lighthouse writer: moves readings from the queue into PostgreSQL."""

import time

BATCH_SIZE = 500
MAX_ATTEMPTS = 3


def backoff_delay(attempt: int, base: float = 0.5) -> float:
    """Seconds to wait before retry `attempt` (1-based): exponential backoff."""
    return base * (2 ** (attempt - 1))


def write_batch(db, readings):
    """Insert one batch with a single COPY; raise on failure."""
    with db.copy("COPY readings (device_id, ts, value) FROM STDIN") as copy:
        for r in readings:
            copy.write_row((r.device_id, r.ts, r.value))


def drain(queue, db, dead_letters):
    """Consume the queue forever, retrying failed batches, parking hopeless ones."""
    while True:
        batch = queue.take(BATCH_SIZE)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                write_batch(db, batch)
                queue.ack(batch)
                break
            except ConnectionError:
                time.sleep(backoff_delay(attempt))
        else:
            dead_letters.park(batch)
            queue.ack(batch)
