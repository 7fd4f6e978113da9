// A room's socket, WS /v1/rooms/{id} (docs/rooms.md): it joins, comes back after a cut as the
// same member with what it missed (`member`, `since`, `last_seq`), and hands each frame on
// once, in order. What the frames mean on screen is room.js's business.
import { backoffMs } from "./stream.js";

// The room is gone for this socket: joining again cannot help (the server closes with 1008).
const FATAL = new Set(["not_found", "room_full", "too_many_rooms"]);
const PING_MS = 20_000; // the server sends a heartbeat after 20 s of silence (ws_heartbeat_s)...
const DEAD_MS = 45_000; // ...so this long without any frame is a connection that died quietly

export class RoomSocket {
  /**
   * `on` receives: state(frame, {again}) (room_state; `again` after a reconnect: the history
   * is already on screen and the frames missed follow), frame(frame) (presence, typing,
   * message, the answer's started/delta/completed/failed, and `missed` when what was missed
   * is gone: then the room_state's history replaces the screen's), error(frame) (an error the socket
   * survives), reconnecting(attempt), ended(reason) (closed for good: a fatal error frame, or
   * `check`'s words). `check()` is asked after a connection that never opened (the browser
   * says nothing about a refused handshake): it resolves to words that end the room (a key
   * refused, a room gone), or null to try again.
   */
  constructor({ room, apiKey, user, on, check }) {
    Object.assign(this, { room, apiKey, user, on, check });
    this.member = null; // ours, from the first room_state: a reconnect comes back as it
    this.pos = null; // the last pos handed on
    this.answer = null; // {requestId, seq}: the answer in progress, as far as it was handed on
    this.stated = false; // a room_state came: the next one is a reconnect's
    this.statePos = null; // the last room_state's pos
    this.ws = null;
    this.joined = false;
    this.closed = false;
    this.attempt = 0;
    this.sent = 0;
    this.heard = 0; // when the last frame came (performance.now())
    this.timer = null;
  }

  open() {
    this.closed = false;
    this.connect();
    this.timer = setInterval(() => this.watch(), PING_MS / 2);
  }

  /** Leave the room (the others see it at once) and close. */
  close() {
    this.closed = true;
    clearInterval(this.timer);
    const ws = this.ws;
    this.ws = null;
    this.joined = false;
    if (!ws) return;
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "leave" }));
    ws.close(1000);
  }

  /** Send `message` with an id of its own (errors carry it back); null when not joined. */
  send(message) {
    if (!this.joined) return null;
    const id = `m${++this.sent}`;
    this.ws.send(JSON.stringify({ ...message, id }));
    return id;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/v1/rooms/${encodeURIComponent(this.room)}`;
    // Browsers cannot set an Authorization header on a socket: the key rides as a subprotocol.
    const ws = new WebSocket(url, this.apiKey ? [`bearer.${this.apiKey}`] : []);
    this.ws = ws;
    let opened = false;
    let fatal = null;
    ws.onopen = () => {
      opened = true;
      this.heard = performance.now();
      ws.send(JSON.stringify(this.joinMessage()));
    };
    ws.onmessage = ({ data }) => {
      if (this.ws !== ws) return;
      this.heard = performance.now();
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        return; // not ours to show; the next frame may be fine
      }
      if (frame.type === "error" && FATAL.has(frame.code)) fatal = frame;
      this.receive(frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return; // left, or given up on by watch()
      this.ws = null;
      this.joined = false;
      if (this.closed) return;
      if (fatal) this.end(fatal.message || fatal.code);
      else this.retry(opened);
    };
  }

  joinMessage() {
    const join = { type: "join", user: this.user };
    if (this.member) join.member = this.member;
    if (this.pos !== null) join.since = this.pos;
    if (this.answer && this.answer.seq >= 0) join.last_seq = this.answer.seq;
    return join;
  }

  refuseJoin(frame) {
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.end(`The room refused to let you in: ${frame.message || frame.code}`);
  }

  end(reason) {
    this.closed = true;
    clearInterval(this.timer);
    this.on.ended(reason);
  }

  async retry(opened) {
    this.attempt += 1;
    this.on.reconnecting(this.attempt);
    if (!opened) {
      const problem = await this.check().catch(() => null); // offline: just try again
      if (this.closed) return;
      if (problem) {
        this.end(problem);
        return;
      }
    }
    // No cap on the attempts: a room is worth waiting for, and the status line says so.
    await new Promise((resolve) => setTimeout(resolve, backoffMs(Math.min(this.attempt, 5))));
    if (!this.closed) this.connect();
  }

  /** Ping a quiet socket; drop one that has said nothing for too long and join again. */
  watch() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const quiet = performance.now() - this.heard;
    if (quiet > DEAD_MS) {
      this.ws = null; // its close may take minutes on a dead network: not waited for
      this.joined = false;
      ws.close();
      this.retry(true);
    } else if (quiet > PING_MS) ws.send(JSON.stringify({ type: "ping" }));
  }

  receive(frame) {
    switch (frame.type) {
      case "room_state": {
        const again = this.stated;
        this.stated = true;
        this.member = frame.member;
        this.joined = true;
        this.attempt = 0;
        // Its pos is where the live frames start. After a reconnect the frames missed come
        // first, with lower positions, so ours stays at the last one handed on until they do.
        this.statePos = frame.pos;
        if (!again) this.pos = frame.pos;
        this.on.state(frame, { again });
        return;
      }
      case "missed":
        // The node no longer holds all that was missed: room_state's history has the messages.
        if (frame.complete === false) {
          this.pos = this.statePos;
          this.on.frame(frame);
        }
        return;
      case "started":
      case "delta":
      case "completed":
      case "failed": {
        const answer = this.answer;
        if (answer?.requestId === frame.request_id && frame.seq <= answer.seq) return; // had it
        this.answer = { requestId: frame.request_id, seq: frame.seq };
        this.on.frame(frame);
        return;
      }
      case "presence":
      case "typing":
      case "message":
        // Frames sent again after a reconnect (`since`) that were already handed on.
        if (typeof frame.pos === "number" && this.pos !== null && frame.pos <= this.pos) return;
        if (typeof frame.pos === "number") this.pos = frame.pos;
        if (frame.type === "message" && frame.role === "assistant") this.answer = null;
        this.on.frame(frame);
        return;
      case "error":
        if (FATAL.has(frame.code)) return; // the close that follows ends the room
        if (this.joined) this.on.error(frame);
        else this.refuseJoin(frame); // the join itself was refused (its name, say)
        return;
      default:
        return; // pong, heartbeat: only the silence they break matters
    }
  }
}
