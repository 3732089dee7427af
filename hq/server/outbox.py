"""What the core wants sent, kept until the turn's group commit: the loop sends it afterwards.

Replies to user requests are kept apart from other messages, so that when the commit fails the
loop can answer them at once (DATABASE_ERROR) while RUN, KILL and agents' acknowledgements wait.
Heartbeat replies need no commit: they leave right after the burst (`now`), outage or not.
"""

from hq import protocol as p


class Outbox:
    def __init__(self):
        self.replies = []       # (identity, req, fields): answers to requests that change things
        self.messages = []      # (identity, kind, frames): everything else, in order
        self.now = []           # (identity, frames): sent before the commit (heartbeat replies)

    def reply(self, identity, req, fields):
        self.replies.append((identity, req, fields))

    def send(self, identity, kind, body):
        self.messages.append((identity, kind, p.encode(kind, body)))

    def send_frames(self, identity, kind, frames):
        self.messages.append((identity, kind, frames))

    def send_now(self, identity, frames):
        self.now.append((identity, frames))

    def take_now(self):
        now, self.now = self.now, []
        return now

    def take(self):
        """Everything to send now (replies first), emptying the outbox."""
        replies, messages = self.replies, self.messages
        self.replies, self.messages = [], []
        return replies, messages

    def sent_to(self, kind):
        """[(identity, body)] of the messages of one kind (for tests and logs)."""
        return [(identity, p.decode(frames, p.ALL_KINDS)[1]) for identity, k, frames in self.messages
                if k == kind]

    def __len__(self):
        return len(self.replies) + len(self.messages)
