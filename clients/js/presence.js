/* presence.js -- the JavaScript client of the presence service (docs/REALTIME.md, docs/API.md).
 *
 * One dependency-free ES module for browsers and Node 18+. connect() opens the user's session over
 * the WebSocket endpoint (GET /api/v2/presence/connect: connect = online), keeps it through network
 * blips (reconnect with exponential backoff and full jitter, resuming the same session_id within
 * the server's grace and every watch with `since`, so nothing flashes offline and no change is
 * missed), and delivers the presence changes of the users it watches as `presence` events.
 *
 * Where WebSocket is blocked (a proxy that refuses the upgrade, a handshake that never opens) it
 * falls back to REST + Server-Sent Events: a REST session of its own (PUT/heartbeat with
 * {"session","device"}, heartbeats at a third of the session's ttl) and a watch stream
 * (GET /api/v2/presence/watch). The SSE reader is fetch-based everywhere (browsers and Node):
 * EventSource cannot send an Authorization header (AUTH_READS=required) and its own reconnect
 * would fight this client's backoff. From the fallback it tries WebSocket again now and then.
 *
 * In a browser it also detects idleness (no input for idle.minutes: an `online` session becomes
 * `away`; the next input gives the chosen status back) and tells the server about activity so the
 * server's own idle timer (PRESENCE_IDLE_S) does not fire while the user is there.
 *
 * Everything from the network is untrusted: frames that are not JSON objects are reported as
 * `error` events and dropped, SSE lines are bounded, records are de-duplicated by version.
 */

/** @typedef {'online'|'away'|'busy'|'offline'} Status */
/** @typedef {'connecting'|'open'|'fallback'|'reconnecting'|'closed'} ClientState */

/**
 * A presence record exactly as the server renders it (docs/API.md, docs/REALTIME.md).
 * @typedef {object} PresenceRecord
 * @property {string} user_id
 * @property {Status} [status]
 * @property {string} [message]
 * @property {string} [last_seen]
 * @property {string} [updated_at]
 * @property {string} [expires_at]
 * @property {string} [node_id]
 * @property {number} [ttl]
 * @property {number} version
 * @property {number} [sessions]
 * @property {'preferred'|'session'|'none'} [source]
 * @property {string} [preferred_until]
 * @property {string} [message_expires_at]
 * @property {boolean} [deleted] true for an erased user ({user_id, deleted, version} only)
 */

export const STATUSES = Object.freeze(['online', 'away', 'busy', 'offline']);
const SESSION_STATUSES = ['online', 'away', 'busy'];
const USER_ID_RE = /^[A-Za-z0-9._~@:=+-]{1,128}$/;
const RESERVED_IDS = new Set(['batch', 'watch', 'connect', '.', '..']);
const SESSION_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const MESSAGE_MAX = 256;
const TTL_MAX = 604800;
const WATCH_CHUNK = 1000;           // WS_MAX_WATCH / SSE_MAX_IDS: ids per watch frame or stream
const SSE_LINE_MAX = 1 << 20;       // longest SSE line accepted (a record is < 2 KiB)
const REST_TIMEOUT_MS = 10000;

const DEFAULTS = {
    status: 'online',
    transport: 'auto',              // 'auto' | 'websocket' | 'sse'
    openTimeoutMs: 10000,           // a handshake that has not welcomed us by then failed
    wsFailuresBeforeFallback: 2,    // consecutive failed handshakes before SSE + REST (auto)
    wsRetryMs: 300000,              // from the fallback, try WebSocket again this often (0 = never)
    sessionTtl: 60,                 // fallback: the REST session's ttl (s); heartbeats every ttl/3
    activityEveryMs: 60000,         // at most one `activity` per this, from input events
    reconnect: { baseMs: 500, maxMs: 30000 },
    idle: { minutes: 5, enabled: undefined },   // enabled: default true in a browser
};

/* ==== small helpers (exported for tests and apps) =========================================== */

/**
 * Whether `id` is a valid user id (docs/API.md "Inputs").
 * @param {unknown} id
 * @returns {boolean}
 */
export function validUserId(id) {
    return typeof id === 'string' && USER_ID_RE.test(id) && !RESERVED_IDS.has(id);
}

/**
 * The delay before reconnect attempt `attempt` (0-based): "full jitter" exponential backoff,
 * a uniform draw in [0, min(maxMs, baseMs * 2^attempt)).
 * @param {number} attempt
 * @param {number} baseMs
 * @param {number} maxMs
 * @param {() => number} [random] a uniform [0,1) source (Math.random)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, baseMs, maxMs, random = Math.random) {
    const cap = Math.min(maxMs, baseMs * Math.pow(2, Math.min(attempt, 30)));
    return Math.floor(random() * cap);
}

/**
 * The `sub` claim of a JWT, read without verifying it (the server verifies; the client only needs
 * to know whose token it holds). Returns null for anything that is not a JWT with a string sub.
 * @param {string} token
 * @returns {string|null}
 */
export function tokenSubject(token) {
    if (typeof token !== 'string')
        return null;
    const parts = token.split('.');
    if (parts.length !== 3 || parts[1].length > 8192)
        return null;
    try {
        const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
        const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
        const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
        const claims = JSON.parse(new TextDecoder().decode(bytes));
        return claims && typeof claims.sub === 'string' && claims.sub ? claims.sub : null;
    } catch {
        return null;
    }
}

function utf8Length(s) {
    return new TextEncoder().encode(s).length;
}

function checkMessage(message) {
    if (message === null)
        return;
    if (typeof message !== 'string')
        throw new TypeError('invalid message: must be a string, or null to clear it');
    if (utf8Length(message) > MESSAGE_MAX)
        throw new RangeError('invalid message: message is longer than 256 bytes');
    // C0 controls, DEL and C1 controls are refused by the server (docs/API.md).
    if (/[\u0000-\u001f\u007f-\u009f]/.test(message))
        throw new RangeError('invalid message: must be UTF-8 text without control characters');
}

function checkTtl(name, v) {
    if (!Number.isInteger(v) || v < 1 || v > TTL_MAX)
        throw new RangeError(`invalid ${name}: ${name} must be an integer from 1 to 604800 (seconds)`);
}

function checkUsers(users) {
    const list = typeof users === 'string' ? [users] : users;
    if (!Array.isArray(list))
        throw new TypeError('invalid users: give a user id or an array of user ids');
    for (const u of list)
        if (!validUserId(u))
            throw new RangeError(`invalid user_id: ${String(u).slice(0, 140)} (user ids are 1-128 bytes of A-Z a-z 0-9 . _ ~ @ : = + -, not batch, watch, connect, . or ..)`);
    return [...new Set(list)];
}

function randomId() {
    const bytes = new Uint8Array(12);
    if (globalThis.crypto && globalThis.crypto.getRandomValues)
        globalThis.crypto.getRandomValues(bytes);
    else
        for (let i = 0; i < bytes.length; i++)
            bytes[i] = Math.floor(Math.random() * 256);
    return 'js-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function isRecord(r) {
    return r !== null && typeof r === 'object' && validUserId(r.user_id) &&
        Number.isSafeInteger(r.version) && r.version >= 0;
}

function clientError(message, props) {
    const e = new Error(message);
    Object.assign(e, props);
    return e;
}

/**
 * Reads a text/event-stream body, calling onEvent({event, id, data}) per event. Lines longer than
 * SSE_LINE_MAX end the stream with an error (a hostile or broken server cannot make it buffer
 * without bound).
 * @param {ReadableStream<Uint8Array>} body
 * @param {(ev: {event: string, id: string|null, data: string}) => void} onEvent
 * @returns {Promise<void>} resolves when the stream ends
 */
export async function readEventStream(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let event = '', data = [], id = null;
    const line = (l) => {
        if (l === '') {
            if (data.length)
                onEvent({ event: event || 'message', id, data: data.join('\n') });
            event = ''; data = []; id = null;
            return;
        }
        if (l[0] === ':')
            return;
        const c = l.indexOf(':');
        const field = c < 0 ? l : l.slice(0, c);
        let value = c < 0 ? '' : l.slice(c + 1);
        if (value[0] === ' ')
            value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id') id = value;
    };
    try {
        for (;;) {
            const { value, done } = await reader.read();
            if (done)
                break;
            buf += decoder.decode(value, { stream: true });
            let start = 0;
            for (;;) {
                const nl = buf.slice(start).search(/\r\n|\r|\n/);
                if (nl < 0)
                    break;
                const end = start + nl;
                const crlf = buf[end] === '\r' && buf[end + 1] === '\n';
                if (buf[end] === '\r' && end + 1 === buf.length)
                    break; // a CR at the end of the chunk may be half of a CRLF
                line(buf.slice(start, end));
                start = end + (crlf ? 2 : 1);
            }
            buf = buf.slice(start);
            if (buf.length > SSE_LINE_MAX)
                throw clientError('event stream line longer than 1 MiB', { code: 'protocol' });
        }
    } finally {
        reader.releaseLock?.();
    }
}

/* ==== the client ============================================================================== */

/**
 * @typedef {object} ConnectOptions
 * @property {string} [url] the service's base URL (http or https); default: the page's origin
 * @property {string|(() => string|Promise<string>)} token a JWT, or a function returning one
 *           (called for every connection and REST request: return a fresh one before it expires)
 * @property {string} [userId] whose session this is (default: the token's sub)
 * @property {string} [device] a label for this session (at most 64 bytes), e.g. 'desktop'
 * @property {'online'|'away'|'busy'} [status] the status to connect with (default online)
 * @property {typeof WebSocket} [WebSocket] the WebSocket constructor (default: the global one)
 * @property {typeof fetch} [fetch] the fetch function (default: the global one)
 * @property {'auto'|'websocket'|'sse'} [transport] 'auto' (default): WebSocket, SSE + REST where
 *           it is blocked; 'websocket': never fall back; 'sse': SSE + REST only
 * @property {{minutes?: number, enabled?: boolean, target?: EventTarget}} [idle] idle detection
 *           (browser default: on, 5 minutes; target: where input events come from, default window)
 * @property {{baseMs?: number, maxMs?: number}} [reconnect] backoff (default 500 ms .. 30 s)
 * @property {number} [openTimeoutMs] a WebSocket handshake not welcomed by then failed (10 s)
 * @property {number} [wsRetryMs] from the fallback, try WebSocket again this often (5 min; 0 never)
 * @property {number} [sessionTtl] the fallback's REST session ttl in seconds (60)
 * @property {() => number} [random] uniform [0,1) source for the jitter (Math.random)
 */

/**
 * Open a presence session and return its client (it connects in the background; listen to
 * `welcome`, `state` and `error`).
 * @param {ConnectOptions} options
 * @returns {PresenceClient}
 */
export function connect(options) {
    return new PresenceClient(options);
}

export class PresenceClient {
    /** @param {ConnectOptions} options */
    constructor(options) {
        const o = options || {};
        if (typeof o.token !== 'string' && typeof o.token !== 'function')
            throw new TypeError('token is required: a JWT string or a function returning one');
        const loc = globalThis.location;
        const base = o.url || (loc && loc.origin);
        if (!base || !/^https?:\/\//i.test(base))
            throw new TypeError('url is required: the service base URL, http:// or https://');
        this.baseUrl = base.replace(/\/+$/, '');
        this._token = o.token;
        this.userId = o.userId || (typeof o.token === 'string' ? tokenSubject(o.token) : null);
        if (!this.userId && typeof o.token === 'string')
            throw new TypeError('userId is required: the token has no sub claim to take it from');
        if (this.userId && !validUserId(this.userId))
            throw new RangeError('invalid userId: not a valid user id');
        this.device = o.device === undefined ? undefined : String(o.device);
        if (this.device !== undefined && (utf8Length(this.device) > 64 || /[\u0000-\u001f\u007f-\u009f]/.test(this.device)))
            throw new RangeError('invalid device: at most 64 bytes of UTF-8 text without control characters');
        const status = o.status || DEFAULTS.status;
        if (!SESSION_STATUSES.includes(status))
            throw new RangeError('invalid status: must be one of online, away, busy');
        this._chosen = status;            // the status the app chose (idle never changes it)
        this._transportOpt = o.transport || DEFAULTS.transport;
        if (!['auto', 'websocket', 'sse'].includes(this._transportOpt))
            throw new RangeError("invalid transport: one of 'auto', 'websocket', 'sse'");
        this._WS = o.WebSocket || globalThis.WebSocket;
        this._fetch = o.fetch || (globalThis.fetch && globalThis.fetch.bind(globalThis));
        this._random = o.random || Math.random;
        const rc = o.reconnect || {};
        this._baseMs = rc.baseMs ?? DEFAULTS.reconnect.baseMs;
        this._maxMs = rc.maxMs ?? DEFAULTS.reconnect.maxMs;
        this._openTimeoutMs = o.openTimeoutMs ?? DEFAULTS.openTimeoutMs;
        this._wsRetryMs = o.wsRetryMs ?? DEFAULTS.wsRetryMs;
        this._sessionTtl = o.sessionTtl ?? DEFAULTS.sessionTtl;
        checkTtl('sessionTtl', this._sessionTtl);
        this._activityEveryMs = o.activityEveryMs ?? DEFAULTS.activityEveryMs;

        /** @type {ClientState} */
        this.state = 'connecting';
        /** @type {'websocket'|'sse'|null} */
        this.transport = null;
        /** @type {string|null} the current session's id */
        this.sessionId = null;
        /** @type {PresenceRecord|null} the user's own record as last seen */
        this.self = null;
        /** @type {Map<string, PresenceRecord>} the latest record of every watched user that has one */
        this.records = new Map();

        this._listeners = new Map();
        this._watched = new Map();        // user -> highest version seen (0: none yet)
        this._attempt = 0;                // reconnect attempts since the last welcome
        this._wsFailures = 0;             // consecutive handshakes that never welcomed us
        this._ws = null;
        this._resume = null;              // {sid, until}: session to resume while within the grace
        this._pendingSet = null;          // a set() made while not connected
        this._timers = new Set();
        this._pingTimer = null;
        this._lastRx = 0;
        this._fb = null;                  // the fallback's state while in it
        this._closed = false;
        this._idle = { enabled: false, minutes: 5, away: false, lastInput: Date.now(), lastSent: 0, timer: null, target: null, off: null };

        const idle = o.idle || {};
        const browser = typeof window !== 'undefined' && typeof document !== 'undefined';
        const enabled = idle.enabled ?? (browser || !!idle.target);
        this.setIdle({ enabled, minutes: idle.minutes ?? DEFAULTS.idle.minutes, target: idle.target });
        if (browser && typeof window.addEventListener === 'function') {
            this._onPageHide = () => this._endFallbackSessionOnUnload();
            window.addEventListener('pagehide', this._onPageHide);
        }
        this._later(0, () => this._start());
    }

    /* ---- events ---- */

    /**
     * Listen to an event: 'welcome' ({session_id, user_id, record, transport, ...}), 'presence'
     * (a watched user's record), 'self' (the user's own record), 'state' ({state, transport,
     * attempt, delayMs?, reason?}), 'error' (an Error with code, status?, fatal?).
     * @param {'welcome'|'presence'|'self'|'state'|'error'} event
     * @param {(arg: any) => void} fn
     * @returns {() => void} a function that removes the listener
     */
    on(event, fn) {
        if (!this._listeners.has(event))
            this._listeners.set(event, new Set());
        this._listeners.get(event).add(fn);
        return () => this.off(event, fn);
    }

    /** Remove a listener added with on(). */
    off(event, fn) {
        this._listeners.get(event)?.delete(fn);
    }

    _emit(event, arg) {
        for (const fn of [...(this._listeners.get(event) || [])]) {
            try {
                fn(arg);
            } catch (e) {
                // A listener's bug must not break the client: rethrow outside our call stack.
                setTimeout(() => { throw e; }, 0);
            }
        }
    }

    _setState(state, extra) {
        this.state = state;
        this._emit('state', { state, transport: this.transport, attempt: this._attempt, ...extra });
    }

    _error(message, props) {
        const e = clientError(message, props);
        this._emit('error', e);
        return e;
    }

    /* ---- the app's API ---- */

    /**
     * Set this session's status and/or the user's message. status: online|away|busy (a session
     * cannot be offline: close() ends it; setPreferred({status:'offline'}) is invisible mode);
     * message: a string, or null to clear it; message_ttl: seconds until the message is cleared.
     * Validated here (throws naming the rule); sent now, or when the connection is back.
     * @param {{status?: 'online'|'away'|'busy', message?: string|null, message_ttl?: number}} fields
     */
    set(fields) {
        const f = fields || {};
        const out = {};
        if (f.status !== undefined) {
            if (!SESSION_STATUSES.includes(f.status))
                throw new RangeError('invalid status: must be one of online, away, busy');
            out.status = f.status;
        }
        if (f.message !== undefined) {
            checkMessage(f.message);
            out.message = f.message === '' ? null : f.message;
        }
        if (f.message_ttl !== undefined) {
            checkTtl('message_ttl', f.message_ttl);
            if (typeof out.message !== 'string')
                throw new RangeError('invalid message_ttl: message_ttl needs a non-empty message');
            out.message_ttl = f.message_ttl;
        }
        if (!Object.keys(out).length)
            throw new TypeError('invalid set: give at least one of status, message, message_ttl');
        if (this._closed)
            throw new Error('client closed');
        if (out.status) {
            this._chosen = out.status;
            this._idle.away = false;
            this._idle.lastInput = Date.now();
        }
        this._sendSet(out);
    }

    /** Tell the server the user is active (an idle `away` session gets its chosen status back). */
    activity() {
        if (this._closed)
            return;
        this._idle.lastInput = Date.now();
        if (this._idle.away) {
            this._idle.away = false;
            this._sendSet({ status: this._chosen });
            return;
        }
        this._idle.lastSent = Date.now();
        if (this.transport === 'websocket')
            this._send({ type: 'activity' });
    }

    /**
     * Watch users: their current records first, then every change, as `presence` events.
     * @param {string|string[]} users
     * @param {{since?: number}} [opts] resume from this version (like SSE's Last-Event-ID)
     */
    watch(users, opts) {
        const list = checkUsers(users);
        const since = opts && opts.since;
        if (since !== undefined && (!Number.isSafeInteger(since) || since < 0))
            throw new RangeError('invalid since: must be a version, a non-negative integer');
        const added = [];
        for (const u of list) {
            if (!this._watched.has(u)) {
                this._watched.set(u, since || 0);
                added.push(u);
            } else if (since !== undefined) {
                added.push(u);
            }
        }
        if (!added.length || this._closed)
            return;
        if (this.transport === 'websocket' && this.state === 'open')
            this._sendWatch(added, since);
        else if (this.transport === 'sse')
            this._fallbackRestream();
    }

    /** Stop watching users (their records leave `records`). @param {string|string[]} users */
    unwatch(users) {
        const list = checkUsers(users).filter((u) => this._watched.has(u));
        for (const u of list) {
            this._watched.delete(u);
            this.records.delete(u);
        }
        if (!list.length || this._closed)
            return;
        if (this.transport === 'websocket' && this.state === 'open')
            for (let i = 0; i < list.length; i += WATCH_CHUNK)
                this._send({ type: 'unwatch', users: list.slice(i, i + WATCH_CHUNK) });
        else if (this.transport === 'sse')
            this._fallbackRestream();
    }

    /** The users watched now. @returns {string[]} */
    watching() {
        return [...this._watched.keys()];
    }

    /**
     * Turn idle detection on or off, or change its delay.
     * @param {{enabled?: boolean, minutes?: number, target?: EventTarget}} opts
     */
    setIdle(opts) {
        const i = this._idle;
        if (opts.minutes !== undefined) {
            if (!(typeof opts.minutes === 'number' && opts.minutes > 0))
                throw new RangeError('invalid idle.minutes: a positive number');
            i.minutes = opts.minutes;
        }
        if (opts.target)
            i.target = opts.target;
        const enabled = opts.enabled ?? i.enabled;
        if (i.off) {
            i.off();
            i.off = null;
        }
        clearTimeout(i.timer);
        i.enabled = !!enabled;
        if (!i.enabled) {
            if (i.away) {
                i.away = false;
                if (!this._closed && this.state !== 'connecting')
                    this._sendSet({ status: this._chosen });
            }
            return;
        }
        const target = i.target || (typeof window !== 'undefined' ? window : null);
        if (target && typeof target.addEventListener === 'function') {
            const onInput = () => this._onInput();
            const names = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'scroll', 'focus'];
            for (const n of names)
                target.addEventListener(n, onInput, { passive: true });
            const doc = typeof document !== 'undefined' && target === globalThis.window ? document : null;
            const onVis = () => { if (doc.visibilityState === 'visible') onInput(); };
            if (doc)
                doc.addEventListener('visibilitychange', onVis);
            i.off = () => {
                for (const n of names)
                    target.removeEventListener(n, onInput, { passive: true });
                if (doc)
                    doc.removeEventListener('visibilitychange', onVis);
            };
        }
        i.lastInput = Date.now();
        this._armIdle();
    }

    _armIdle() {
        const i = this._idle;
        clearTimeout(i.timer);
        if (!i.enabled || this._closed)
            return;
        const due = i.lastInput + i.minutes * 60000 - Date.now();
        i.timer = setTimeout(() => this._idleCheck(), Math.max(0, Math.min(due, 60000)) + 5);
        if (i.timer.unref) i.timer.unref();
    }

    _idleCheck() {
        const i = this._idle;
        if (!i.enabled || this._closed)
            return;
        if (!i.away && Date.now() - i.lastInput >= i.minutes * 60000 && this._chosen === 'online') {
            // Only an `online` user turns away: `busy` (do not disturb) stays busy while idle.
            i.away = true;
            this._sendSet({ status: 'away' }, true);
            this._emit('state', { state: this.state, transport: this.transport, attempt: this._attempt, idle: true });
        }
        if (!i.away)
            this._armIdle();
    }

    _onInput() {
        const i = this._idle;
        const now = Date.now();
        i.lastInput = now;
        if (i.away) {
            i.away = false;
            this._sendSet({ status: this._chosen }, true);
            this._emit('state', { state: this.state, transport: this.transport, attempt: this._attempt, idle: false });
            this._armIdle();
            return;
        }
        if (now - i.lastSent >= this._activityEveryMs) {
            i.lastSent = now;
            if (this.transport === 'websocket' && this.state === 'open')
                this._send({ type: 'activity' });
        }
        if (!i.timer)
            this._armIdle();
    }

    /** Whether idle detection has turned this session away. @returns {boolean} */
    get idle() {
        return this._idle.away;
    }

    /**
     * Sign this device out and stop: the session ends at once (over WebSocket a `bye` message,
     * which the server takes as a sign-out without the grace, then a close with 1000; in the
     * fallback the REST session is ended). Any close without `bye` -- 1000 included, the page going
     * away (1001), a lost network -- keeps the session for the server's grace, so a reload never
     * shows the user offline. Called while the handshake is still under way, the sign-out is sent
     * as soon as it opens (the server may hold the session already).
     * @returns {Promise<void>} settles once the fallback's end-of-session request is answered
     */
    close() {
        if (this._closed)
            return this._closing || Promise.resolve();
        this._closed = true;
        for (const t of this._timers)
            clearTimeout(t);
        this._timers.clear();
        this._stopPing();
        clearTimeout(this._idle.timer);
        if (this._idle.off)
            this._idle.off();
        if (this._onPageHide)
            window.removeEventListener('pagehide', this._onPageHide);
        if (this._ws) {
            const ws = this._ws;
            this._ws = null;
            const bye = () => {
                try { ws.send(JSON.stringify({ type: 'bye' })); } catch { /* not open */ }
                try { ws.close(1000, 'client closed'); } catch { /* already closing */ }
            };
            if (ws.readyState === 0)
                ws.onopen = bye;
            else if (ws.readyState === 1)
                bye();
        }
        this._closing = this._stopFallback(true) || Promise.resolve();
        this.transport = null;
        this._setState('closed');
        return this._closing;
    }

    /* ---- REST helpers (docs/API.md, docs/REALTIME.md) ---- */

    async _authHeader() {
        const t = typeof this._token === 'function' ? await this._token() : this._token;
        if (typeof t !== 'string' || !t)
            throw clientError('token function returned no token', { code: 'unauthorized', fatal: true });
        if (!this.userId) {
            this.userId = tokenSubject(t);
            if (!this.userId)
                throw clientError('the token has no sub claim: pass userId', { code: 'unauthorized', fatal: true });
        }
        return { token: t, header: 'Bearer ' + t };
    }

    /**
     * One REST call: resolves {status, body} (body: the parsed JSON, or null), rejects only on a
     * network failure or timeout (Error with code 'network').
     */
    async request(method, path, body, { keepalive = false, timeoutMs = REST_TIMEOUT_MS } = {}) {
        if (!this._fetch)
            throw new TypeError('no fetch: pass options.fetch');
        const { header } = await this._authHeader();
        const ctl = typeof AbortController !== 'undefined' ? new AbortController() : null;
        const t = ctl ? setTimeout(() => ctl.abort(), timeoutMs) : null;
        try {
            const res = await this._fetch(this.baseUrl + path, {
                method,
                headers: { Authorization: header, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
                body: body !== undefined ? JSON.stringify(body) : undefined,
                signal: ctl ? ctl.signal : undefined,
                keepalive,
                cache: 'no-store',
            });
            const text = await res.text();
            let json = null;
            try { json = text ? JSON.parse(text) : null; } catch { json = null; }
            return { status: res.status, body: json, headers: res.headers };
        } catch (e) {
            throw clientError(`${method} ${path}: ${e && e.name === 'AbortError' ? 'timed out' : (e && e.message) || e}`, { code: 'network', cause: e });
        } finally {
            if (t) clearTimeout(t);
        }
    }

    _userPath(suffix = '') {
        return '/api/v2/presence/' + encodeURIComponent(this.userId) + suffix;
    }

    async _restData(method, path, body) {
        const r = await this.request(method, path, body);
        if (r.status !== 200 || !r.body || r.body.success !== true) {
            const msg = (r.body && typeof r.body.error === 'string') ? r.body.error : `HTTP ${r.status}`;
            throw clientError(msg, { code: r.status === 401 ? 'unauthorized' : 'http', status: r.status });
        }
        return r.body.data;
    }

    /**
     * The user's live sessions (GET /api/v2/presence/{id}/sessions).
     * @returns {Promise<Array<{session_id: string, device?: string, status: string, connected_at: string, last_seen: string, expires_at: string, node_id: string}>>}
     */
    async sessions() {
        await this._authHeader();
        const data = await this._restData('GET', this._userPath('/sessions'));
        const list = data && data[this.userId];
        return Array.isArray(list) ? list : [];
    }

    /**
     * Sign out one of the user's sessions (DELETE /api/v2/presence/{id}/sessions/{sid}).
     * @param {string} sessionId
     * @returns {Promise<PresenceRecord|null>} the record as it stands after
     */
    async endSession(sessionId) {
        if (typeof sessionId !== 'string' || !SESSION_ID_RE.test(sessionId))
            throw new RangeError('invalid session: a session id is 1-64 bytes of A-Z a-z 0-9 . _ -');
        await this._authHeader();
        const data = await this._restData('DELETE', this._userPath('/sessions/' + encodeURIComponent(sessionId)));
        const rec = data && data[this.userId];
        if (isRecord(rec))
            this._onSelf(rec);
        return rec || null;
    }

    /**
     * Set the user's preferred status (PUT without a session): it wins over every session's
     * status until `ttl` seconds pass. {status:'offline'} while devices are connected is invisible
     * mode. Without `message` the user's message is cleared (REST semantics).
     * @param {{status: Status, message?: string, ttl?: number, message_ttl?: number}} fields
     * @returns {Promise<PresenceRecord>}
     */
    async setPreferred(fields) {
        const f = fields || {};
        if (!STATUSES.includes(f.status))
            throw new RangeError('invalid status: must be one of online, away, busy, offline');
        const body = { status: f.status };
        if (f.message !== undefined && f.message !== null) {
            checkMessage(f.message);
            body.message = f.message;
        }
        if (f.ttl !== undefined) {
            checkTtl('ttl', f.ttl);
            body.ttl = f.ttl;
        }
        if (f.message_ttl !== undefined) {
            checkTtl('message_ttl', f.message_ttl);
            if (!body.message)
                throw new RangeError('invalid message_ttl: message_ttl needs a non-empty message');
            body.message_ttl = f.message_ttl;
        }
        await this._authHeader();
        const data = await this._restData('PUT', this._userPath(), body);
        const rec = data && data[this.userId];
        if (isRecord(rec))
            this._onSelf(rec);
        return rec;
    }

    /**
     * End the user's preferred status before its expiry (DELETE /api/v2/presence/{id}/preferred):
     * the sessions decide the status again -- how invisible mode is turned off. The message is
     * kept.
     * @returns {Promise<PresenceRecord>} the record as it stands after
     */
    async clearPreferred() {
        await this._authHeader();
        const data = await this._restData('DELETE', this._userPath('/preferred'));
        const rec = data && data[this.userId];
        if (isRecord(rec))
            this._onSelf(rec);
        return rec;
    }

    /**
     * Read records (GET /api/v2/presence?users=...): a map of the ones found.
     * @param {string|string[]} users
     * @returns {Promise<Record<string, PresenceRecord>>}
     */
    async get(users) {
        const list = checkUsers(users);
        const q = list.map(encodeURIComponent).join(',');
        return (await this._restData('GET', '/api/v2/presence?users=' + q)) || {};
    }

    /* ---- the connection's life ---- */

    _later(ms, fn) {
        const t = setTimeout(() => {
            this._timers.delete(t);
            if (!this._closed)
                fn();
        }, ms);
        this._timers.add(t);
        return t;
    }

    _start() {
        if (this._transportOpt === 'sse' || !this._WS) {
            if (!this._WS && this._transportOpt === 'websocket') {
                this._error('no WebSocket implementation: pass options.WebSocket', { code: 'transport', fatal: true });
                this.close();
                return;
            }
            this._startFallback();
            return;
        }
        this._openWs();
    }

    _scheduleReconnect(reason) {
        const delayMs = backoffDelay(this._attempt, this._baseMs, this._maxMs, this._random);
        this._attempt++;
        this._setState('reconnecting', { delayMs, reason });
        this._later(delayMs, () => this._openWs());
    }

    async _openWs() {
        let auth;
        try {
            auth = await this._authHeader();
        } catch (e) {
            this._emit('error', e);
            if (e.fatal) this.close(); else this._scheduleReconnect('token');
            return;
        }
        if (this._closed)
            return;
        const wsBase = this.baseUrl.replace(/^http/i, 'ws');
        const q = new URLSearchParams();
        q.set('access_token', auth.token);
        if (this.device !== undefined)
            q.set('device', this.device);
        q.set('status', this._idle.away ? 'away' : this._chosen);
        const resume = this._resume && Date.now() < this._resume.until ? this._resume.sid : null;
        if (resume)
            q.set('session_id', resume);
        this._resume = null; // one try: a refused resume must not block the next handshake
        const url = wsBase + '/api/v2/presence/connect?' + q.toString();
        let ws;
        try {
            ws = new this._WS(url);
        } catch (e) {
            this._wsFailed('cannot create WebSocket: ' + ((e && e.message) || e));
            return;
        }
        const probing = this.transport === 'sse'; // a retry from the fallback
        this._ws = ws;
        let welcomed = false;
        const openTimer = this._later(this._openTimeoutMs, () => {
            if (!welcomed && this._ws === ws) {
                this._ws = null;
                try { ws.close(); } catch { /* not open */ }
                this._wsFailed('WebSocket handshake timed out', probing);
            }
        });
        ws.onmessage = (ev) => {
            if (this._ws !== ws)
                return;
            this._lastRx = Date.now();
            let m;
            try {
                m = typeof ev.data === 'string' ? JSON.parse(ev.data) : null;
            } catch {
                m = null;
            }
            if (!m || typeof m !== 'object' || typeof m.type !== 'string') {
                this._error('server sent a frame that is not a JSON object with a type', { code: 'protocol' });
                return;
            }
            if (m.type === 'welcome') {
                if (welcomed)
                    return;
                welcomed = true;
                clearTimeout(openTimer);
                this._timers.delete(openTimer);
                this._onWelcome(ws, m);
            } else if (!welcomed) {
                this._error(`server sent '${String(m.type).slice(0, 32)}' before welcome`, { code: 'protocol' });
            } else if (m.type === 'presence') {
                if (isRecord(m.record)) this._onRecord(m.record);
                else this._error('presence frame without a valid record', { code: 'protocol' });
            } else if (m.type === 'error') {
                this._error(typeof m.error === 'string' ? m.error : 'server error', { code: 'server' });
            }
            // pong and types this version does not know: nothing to do
        };
        // Some implementations (node 20's) fire `error` without a `close` after a refused
        // handshake: whichever comes first ends this connection, once.
        const ended = (ev, what) => {
            if (this._ws !== ws)
                return;
            this._ws = null;
            clearTimeout(openTimer);
            this._timers.delete(openTimer);
            this._stopPing();
            if (what === 'error')
                try { ws.close(); } catch { /* not open */ }
            if (this._closed)
                return;
            if (!welcomed) {
                this._wsFailed(`WebSocket ${what} before welcome` + (ev && ev.code ? ` (code ${ev.code})` : ''), probing);
                return;
            }
            this._onWsLost(ev && ev.code ? ev : { code: 1006 });
        };
        ws.onerror = (ev) => ended(ev, 'error');
        ws.onclose = (ev) => ended(ev, 'closed');
    }

    _wsFailed(reason, probing) {
        if (this._closed)
            return;
        this._wsFailures++;
        if (probing || this.transport === 'sse') {
            // Still blocked: stay on SSE + REST and try again later.
            this._later(this._wsRetryMs, () => this._openWs());
            return;
        }
        if (this._transportOpt === 'auto' && this._wsFailures >= DEFAULTS.wsFailuresBeforeFallback) {
            this._error(reason + '; falling back to SSE + REST', { code: 'transport' });
            this._startFallback();
            return;
        }
        this._scheduleReconnect(reason);
    }

    _onWelcome(ws, m) {
        const wasFallback = this.transport === 'sse';
        if (wasFallback)
            this._stopFallback(true);
        this._wsFailures = 0;
        this._attempt = 0;
        this.transport = 'websocket';
        this.sessionId = typeof m.session_id === 'string' ? m.session_id : null;
        this._pingMs = Number.isSafeInteger(m.ping_interval_ms) && m.ping_interval_ms > 0 ? m.ping_interval_ms : 25000;
        this._graceMs = Number.isSafeInteger(m.grace_ms) && m.grace_ms >= 0 ? m.grace_ms : 5000;
        if (isRecord(m.record))
            this._onSelf(m.record);
        this._setState('open');
        this._emit('welcome', { ...m, transport: 'websocket' });
        // Watches again. Users we have a version of resume from the highest version seen (every
        // change made while we were away has a higher version than anything received before);
        // users we have no record of yet (watched, but the current record never arrived, or they
        // have none) are asked for their current record.
        const known = [], pending = [];
        for (const [u, v] of this._watched)
            (v > 0 ? known : pending).push(u);
        if (known.length)
            this._sendWatch(known, this._maxVersion());
        if (pending.length)
            this._sendWatch(pending, undefined);
        // Status: the connect URL carried it; a set() made meanwhile goes now.
        if (this._pendingSet) {
            const p = this._pendingSet;
            this._pendingSet = null;
            this._send({ type: 'set', ...p });
        }
        this._startPing(ws);
    }

    _onWsLost(ev) {
        const code = ev.code;
        if (code === 4001) {
            // The session was ended from outside (signed out from another device, evicted by
            // MAX_SESSIONS, the user erased): reconnecting would sign the device back in.
            this._error('session ended: this device was signed out', { code: 'session_ended', fatal: true });
            this.close();
            return;
        }
        if (code === 4000) {
            // Another connection resumed this session: reconnecting with it would steal it back.
            this._error('session resumed elsewhere', { code: 'session_taken' });
            this.sessionId = null;
        } else if (this.sessionId && this._graceMs > 0) {
            this._resume = { sid: this.sessionId, until: Date.now() + this._graceMs };
        }
        this._scheduleReconnect(`connection closed (code ${code})`);
    }

    _startPing(ws) {
        this._stopPing();
        this._lastRx = Date.now();
        const every = this._pingMs;
        const tick = () => {
            if (this._ws !== ws || this._closed)
                return;
            const quiet = Date.now() - this._lastRx;
            if (quiet >= 2 * every + 5000) {
                // Nothing for two intervals (not even our pongs): a dead link the OS has not noticed.
                this._ws = null;
                try { ws.close(4002, 'no answer'); } catch { /* gone */ }
                this._stopPing();
                this._onWsLost({ code: 1006 });
                return;
            }
            if (quiet >= every)
                this._send({ type: 'ping' });
            this._pingTimer = setTimeout(tick, Math.min(every, 5000) + 0);
        };
        this._pingTimer = setTimeout(tick, Math.min(every, 5000));
    }

    _stopPing() {
        clearTimeout(this._pingTimer);
        this._pingTimer = null;
    }

    _send(obj) {
        const ws = this._ws;
        if (!ws || ws.readyState !== 1)
            return false;
        try {
            ws.send(JSON.stringify(obj));
            return true;
        } catch {
            return false;
        }
    }

    _sendWatch(users, since) {
        for (let i = 0; i < users.length; i += WATCH_CHUNK) {
            const m = { type: 'watch', users: users.slice(i, i + WATCH_CHUNK) };
            if (since !== undefined)
                m.since = since;
            this._send(m);
        }
    }

    _sendSet(fields, fromIdle) {
        if (this.transport === 'websocket' && this.state === 'open' && this._send({ type: 'set', ...fields }))
            return;
        if (this.transport === 'sse' && this._fb) {
            this._fallbackSet(fields);
            return;
        }
        this._pendingSet = { ...(this._pendingSet || {}), ...fields };
        if (fromIdle && fields.status)
            this._pendingSet.status = fields.status;
    }

    _maxVersion() {
        let v = 0;
        for (const x of this._watched.values())
            if (x > v) v = x;
        return v;
    }

    _onSelf(rec) {
        if (this.self && rec.version < this.self.version)
            return;
        this.self = rec;
        this._emit('self', rec);
    }

    _onRecord(rec) {
        const uid = rec.user_id;
        if (uid === this.userId)
            this._onSelf(rec);
        if (!this._watched.has(uid))
            return;
        const seen = this._watched.get(uid);
        const known = this.records.get(uid);
        if (known && rec.version <= known.version)
            return; // a duplicate from a resume
        if (!known && seen && rec.version < seen)
            return;
        this._watched.set(uid, Math.max(seen || 0, rec.version));
        if (rec.deleted)
            this.records.delete(uid);
        else
            this.records.set(uid, rec);
        this._emit('presence', rec);
    }

    /* ---- fallback: REST session + SSE watch ---- */

    _startFallback() {
        if (this._closed)
            return;
        this.transport = 'sse';
        this._fb = { sid: this._fbSid || (this._fbSid = randomId()), lastOk: 0, hbTimer: null, abort: null, streamGen: 0, restAttempt: 0, sseAttempt: 0 };
        this.sessionId = this._fb.sid;
        this._setState('fallback');
        this._fallbackOpen();
        this._fallbackRestream();
        if (this._WS && this._transportOpt === 'auto' && this._wsRetryMs > 0)
            this._later(this._wsRetryMs, () => this._openWs());
    }

    _stopFallback(endSession) {
        const fb = this._fb;
        if (!fb)
            return;
        this._fb = null;
        clearTimeout(fb.hbTimer);
        this._timers.delete(fb.hbTimer);
        if (fb.abort)
            fb.abort.abort();
        this._fbSid = null;
        if (endSession && fb.lastOk) {
            // Best effort: the session would end by its ttl anyway.
            return this.request('PUT', this._userPath(), { session: fb.sid, status: 'offline' }, { keepalive: true })
                .then(() => {}, () => {});
        }
        return null;
    }

    _endFallbackSessionOnUnload() {
        if (this._fb && this._fb.lastOk && typeof this._token === 'string' && this._fetch) {
            try {
                this._fetch(this.baseUrl + this._userPath(), {
                    method: 'PUT', keepalive: true,
                    headers: { Authorization: 'Bearer ' + this._token, 'Content-Type': 'application/json' },
                    body: JSON.stringify({ session: this._fb.sid, status: 'offline' }),
                }).catch(() => {});
            } catch { /* page is going away */ }
        }
    }

    /** Open (or re-open) the REST session with the chosen status, then heartbeat it. */
    async _fallbackOpen() {
        const fb = this._fb;
        if (!fb)
            return;
        const body = { session: fb.sid, status: this._idle.away ? 'away' : this._chosen, ttl: this._sessionTtl };
        if (this.device !== undefined)
            body.device = this.device;
        if (this._pendingSet) {
            Object.assign(body, this._pendingSet);
            if (this._pendingSet.message === null) body.message = '';
            this._pendingSet = null;
        }
        const ok = await this._fallbackWrite('PUT', this._userPath(), body);
        if (!ok || this._fb !== fb)
            return;
        if (!fb.welcomed) {
            fb.welcomed = true;
            this._emit('welcome', { type: 'welcome', session_id: fb.sid, user_id: this.userId, record: this.self, transport: 'sse' });
        }
    }

    async _fallbackHeartbeat() {
        const fb = this._fb;
        if (!fb)
            return;
        if (Date.now() - fb.lastOk >= this._sessionTtl * 1000) {
            // The session may have ended (a laptop slept): re-open it with its status.
            await this._fallbackOpen();
            return;
        }
        const body = { session: fb.sid, ttl: this._sessionTtl };
        if (this.device !== undefined)
            body.device = this.device;
        await this._fallbackWrite('POST', this._userPath('/heartbeat'), body);
    }

    async _fallbackSet(fields) {
        const fb = this._fb;
        const body = { session: fb.sid, status: fields.status || (this._idle.away ? 'away' : this._chosen), ttl: this._sessionTtl };
        if (this.device !== undefined)
            body.device = this.device;
        if (fields.message !== undefined)
            body.message = fields.message === null ? '' : fields.message;
        if (fields.message_ttl !== undefined)
            body.message_ttl = fields.message_ttl;
        await this._fallbackWrite('PUT', this._userPath(), body);
    }

    /** One REST write of the fallback; schedules the next heartbeat. Returns true on 200. */
    async _fallbackWrite(method, path, body) {
        const fb = this._fb;
        let r;
        try {
            r = await this.request(method, path, body);
        } catch (e) {
            r = { status: 0, error: e };
        }
        if (this._fb !== fb || this._closed)
            return false;
        clearTimeout(fb.hbTimer);
        this._timers.delete(fb.hbTimer);
        if (r.status === 200 && r.body && r.body.data && isRecord(r.body.data[this.userId])) {
            fb.lastOk = Date.now();
            fb.restAttempt = 0;
            this._onSelf(r.body.data[this.userId]);
            fb.hbTimer = this._later(Math.max(1000, Math.floor(this._sessionTtl * 1000 / 3)), () => this._fallbackHeartbeat());
            return true;
        }
        const msg = r.status ? ((r.body && r.body.error) || `HTTP ${r.status}`) : r.error.message;
        if (r.status === 401 || r.status === 403) {
            this._error(msg, { code: r.status === 401 ? 'unauthorized' : 'forbidden', status: r.status, fatal: true });
            this.close();
            return false;
        }
        if (r.status === 400) {
            // Our own input was refused: say so and keep the session going with heartbeats.
            this._error(msg, { code: 'http', status: 400 });
            fb.hbTimer = this._later(Math.max(1000, Math.floor(this._sessionTtl * 1000 / 3)), () => this._fallbackHeartbeat());
            return false;
        }
        this._error(msg, { code: r.status ? 'http' : 'network', status: r.status || undefined });
        const delay = backoffDelay(fb.restAttempt++, this._baseMs, this._maxMs, this._random);
        fb.hbTimer = this._later(delay, () => this._fallbackOpen());
        return false;
    }

    /** (Re)open the SSE stream for the watched users (after a change of the list, or a drop). */
    _fallbackRestream() {
        const fb = this._fb;
        if (!fb)
            return;
        if (fb.restreamQueued)
            return;
        fb.restreamQueued = true;
        queueMicrotask(() => {
            fb.restreamQueued = false;
            if (this._fb !== fb)
                return;
            if (fb.abort)
                fb.abort.abort();
            fb.abort = null;
            const gen = ++fb.streamGen;
            if (this._watched.size)
                this._fallbackStream(fb, gen);
        });
    }

    async _fallbackStream(fb, gen) {
        const users = [...this._watched.keys()].slice(0, WATCH_CHUNK);
        if (this._watched.size > WATCH_CHUNK)
            this._error(`the SSE fallback watches at most ${WATCH_CHUNK} users; the rest are not watched`, { code: 'limit' });
        // since only when every watched user has a version: a user without one needs the current
        // records (the stream then starts with them; versions we already have are dropped).
        const since = [...this._watched.values()].every((v) => v > 0) ? this._maxVersion() : 0;
        let path = '/api/v2/presence/watch?users=' + users.map(encodeURIComponent).join(',');
        if (since)
            path += '&since=' + since;
        const ctl = new AbortController();
        fb.abort = ctl;
        let failed = null, status = 0;
        try {
            const { header } = await this._authHeader();
            const res = await this._fetch(this.baseUrl + path, {
                headers: { Authorization: header, Accept: 'text/event-stream' },
                signal: ctl.signal, cache: 'no-store',
            });
            status = res.status;
            if (res.status !== 200 || !res.body) {
                let msg = `HTTP ${res.status}`;
                try { const j = await res.json(); if (j && typeof j.error === 'string') msg = j.error; } catch { /* not JSON */ }
                failed = clientError('watch stream: ' + msg, { code: res.status === 401 ? 'unauthorized' : 'http', status: res.status });
            } else {
                fb.sseAttempt = 0;
                await readEventStream(res.body, (ev) => {
                    if (this._fb !== fb || fb.streamGen !== gen || ev.event !== 'presence')
                        return;
                    let rec;
                    try { rec = JSON.parse(ev.data); } catch { rec = null; }
                    if (isRecord(rec)) this._onRecord(rec);
                    else this._error('watch stream: an event that is not a record', { code: 'protocol' });
                });
                failed = clientError('watch stream ended', { code: 'network' });
            }
        } catch (e) {
            failed = e;
        }
        if (this._fb !== fb || fb.streamGen !== gen || this._closed)
            return; // replaced or stopped on purpose
        fb.abort = null;
        if (status === 401 || status === 403) {
            failed.fatal = true;
            this._emit('error', failed);
            this.close();
            return;
        }
        if (status !== 200 || failed.code === 'protocol')
            this._emit('error', failed); // a plain end of a 200 stream just reconnects
        const delay = backoffDelay(fb.sseAttempt++, this._baseMs, this._maxMs, this._random);
        this._later(delay, () => {
            if (this._fb === fb && fb.streamGen === gen)
                this._fallbackRestream();
        });
    }
}

export default { connect, PresenceClient, backoffDelay, tokenSubject, validUserId, readEventStream, STATUSES };
