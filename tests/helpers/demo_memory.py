"""A realistic demo memory for screenshots: three days of chats in a few conversations and screen
frames of an editor, a terminal, a browser and a mail client, spread over each working day.

fill(memory) adds them; the frames are pictures rendered from their text (as capture would store:
a palette PNG or WebP screen and a small WebP thumbnail), so Timeline and Search show real images.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np

from mneme.core.records import FrameIn, Message

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"

CHATS = {  # conversation, app: (day offset, hour, speaker, text)
    ("Family", "WhatsApp"): [
        (2, 8.5, "Mum", "Grandma's birthday dinner is at the Italian place on Friday at 7"),
        (2, 8.6, "me", "Great, I'll book a table for six 🎉🍝"),
        (2, 19.2, "Ben", "Can someone pick up the cake from Hartley's bakery on Friday afternoon?"),
        (1, 12.1, "Mum", "The plumber is coming Tuesday about the boiler, the quote was 240 pounds"),
        (1, 12.3, "me", "Fine, I'll be home from 9 to let him in"),
        (0, 9.4, "Ben", "Don't forget Grandma likes the lemon tart, not the chocolate one"),
    ],
    ("#launch", "Slack"): [
        (2, 10.0, "Anna", "The launch moved to Thursday because QA found a payment bug"),
        (2, 10.2, "Ben", "I'll tell the customer about the new launch date"),
        (2, 15.5, "Priya", "Payment bug fixed in build 4.2.1, QA retesting the refund flow now"),
        (1, 9.8, "Anna", "Refund flow passes. Release notes draft is in the shared drive"),
        (1, 16.4, "Priya", "Staging is on 4.2.1; the load test peaked at 1,800 requests a second"),
        (0, 10.5, "Anna", "Launch checklist: DNS switch at 8:00, status page update, customer email at 9"),
        (0, 11.2, "Ben", "Customer confirmed Thursday works for them"),
    ],
    ("Garden club", "Signal"): [
        (2, 18.0, "Lena", "Tomato seedlings go out after the last frost in May"),
        (1, 18.5, "Omar", "The allotment water trough is fixed, thanks to whoever left the spare washer"),
        (0, 17.9, "Lena", "Seed swap is on Saturday at the community hall, 10 till 12"),
    ],
    ("Dr Okafor's surgery", "Messages"): [
        (1, 8.1, "Surgery", "Your appointment with Dr Okafor is confirmed for Monday 3 at 10:40"),
        (1, 8.4, "me", "Thank you, I will bring the repeat prescription form"),
    ],
}

SCREENS = [  # day offset, hour, app, title, lines
    (2, 9.1, "code", "release_notes.md — launch", [
        "# Release 4.2", "", "## Fixed", "- Payment retries no longer charge twice (QA-812)",
        "- Refunds show the right currency", "", "## Launch", "Thursday, DNS switch at 8:00"]),
    (2, 11.4, "firefox", "Payment gateway status — Mozilla Firefox", [
        "Payment gateway status", "All systems operational", "Card payments 99.98% uptime",
        "Refund API: degraded performance resolved at 11:02"]),
    (2, 14.0, "xterm", "priya@build: ~/app", [
        "$ make test", "collected 1,284 items", "1,284 passed in 212.4s", "$ git tag v4.2.1",
        "$ git push origin v4.2.1"]),
    (2, 16.8, "thunderbird", "Inbox — Re: Launch date", [
        "From: Sam Whitfield <sam@customer.example>", "Subject: Re: Launch date",
        "Thursday is fine for us. Please send the migration guide by Wednesday noon.",
        "Thanks, Sam"]),
    (1, 9.3, "code", "migration_guide.md — launch", [
        "# Migrating to 4.2", "1. Back up the database (pg_dump)", "2. Run the schema upgrade: app migrate",
        "3. Rotate the API keys in Settings > Security", "Expected downtime: under 5 minutes"]),
    (1, 10.7, "firefox", "Hartley's Bakery — order a cake — Mozilla Firefox", [
        "Hartley's Bakery", "Lemon tart, serves 8 — 24.00 pounds", "Collection: Friday 15:00 to 17:30",
        "Order reference HB-5521"]),
    (1, 13.5, "xterm", "priya@staging: ~/load", [
        "$ locust --headless -u 2000 -r 100", "Requests/s: 1,812   Failures: 0.02%",
        "p95 latency 182 ms", "Load test finished"]),
    (1, 15.2, "libreoffice", "budget_q4.ods — LibreOffice Calc", [
        "Q4 budget", "Hosting        4,200", "Support tools    860", "Launch event   1,500",
        "Total          6,560"]),
    (0, 8.7, "thunderbird", "Inbox — Migration guide", [
        "To: Sam Whitfield", "Subject: Migration guide for 4.2",
        "Attached is the migration guide. Downtime is under five minutes.", "Best, Anna"]),
    (0, 10.1, "code", "launch_checklist.md — launch", [
        "# Launch checklist", "[x] DNS switch at 8:00", "[x] Status page update",
        "[ ] Customer email at 9:00", "[ ] Post in #launch when done"]),
    (0, 11.6, "firefox", "Italian restaurants near me — Mozilla Firefox", [
        "Trattoria Bella — Friday 19:00, table for 6", "Booking confirmed: reference TB-2291",
        "Address: 14 Mill Lane"]),
    (0, 14.3, "xterm", "me@laptop: ~/notes", [
        "$ cat todo.txt", "- pick up lemon tart Friday 15:00 (HB-5521)", "- plumber Tuesday 9:00, boiler",
        "- seed swap Saturday 10:00"]),
]

TYPED = [  # lines typed into a window after its picture: text-only frames (as capture stores them)
    (0, 14.34, "xterm", "me@laptop: ~/notes", ["$ echo '- call Ben about the cake' >> todo.txt"]),
]


def render(title: str, lines: list[str], app: str, size=(1280, 800)) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    dark = app == "xterm"
    img = Image.new("RGB", size, (30, 30, 34) if dark else (250, 250, 250))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, size[0], 38], fill=(60, 60, 70))
    d.text((16, 9), title, font=ImageFont.truetype(FONT, 18), fill=(235, 235, 235))
    font = ImageFont.truetype(MONO if dark or app == "code" else FONT, 24)
    y = 70
    for line in lines:
        d.text((40, y), line, font=font, fill=(220, 220, 220) if dark else (25, 25, 25))
        y += 40
    return np.asarray(img)


def fill(mem, days_back_from: datetime | None = None) -> None:
    from mneme.capture.pipeline import THUMB_WIDTH, encode_screen, encode_webp

    today = (days_back_from or datetime.now()).replace(hour=0, minute=0, second=0, microsecond=0)
    now = time.time()

    def at(day: int, hour: float) -> float:
        t = (today - timedelta(days=day) + timedelta(hours=hour)).timestamp()
        return t if t < now else now - (18.5 - hour) * 600  # today's later hours: the last two hours

    messages = [Message(f"demo-{conv}-{i}", conv, at(day, hour), speaker, text, app=app)
                for (conv, app), rows in CHATS.items() for i, (day, hour, speaker, text) in enumerate(rows)]
    mem.import_messages(messages)
    for i, (day, hour, app, title, lines) in enumerate(SCREENS):
        rgb = render(title, lines, app)
        page = title.removesuffix(" — Mozilla Firefox")
        mem.store.add_frame(FrameIn(f"demo-frame-{i}", at(day, hour), 1, app, page, rgb.shape[1], rgb.shape[0],
                                    encode_screen(rgb), encode_webp(rgb, THUMB_WIDTH, 40), "\n".join(lines), "[]"))
    for i, (day, hour, app, title, lines) in enumerate(TYPED):
        mem.store.add_frame(FrameIn(f"demo-typed-{i}", at(day, hour), 1, app, title, 1280, 800, b"", b"",
                                    "\n".join(lines), "[]"))
    mem.embed_pending()
