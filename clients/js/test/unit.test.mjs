/* unit.test.mjs -- unit tests of presence.js without a server: the pure helpers (backoff with full
 * jitter, the token's subject, the SSE parser over awkward chunk boundaries) and the client's
 * protocol decisions driven through its WebSocket seam (options.WebSocket) by a scripted peer:
 * what it sends on connect, after a drop (resume within the grace, watches with since, a set made
 * while away), duplicates dropped, close codes 4000 and 4001, fallback after refused handshakes, idle.
 * The same paths run against the real gateway in websocket.test.mjs once it has the endpoint.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, backoffDelay, tokenSubject, validUserId, readEventStream } from '../presence.js';

const b64u = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims) => `${b64u({ alg: 'HS256', typ: 'JWT' })}.${b64u(claims)}.c2ln`;

/** A scripted WebSocket peer: the test plays the server. */
class ScriptedWS {
    static all = [];
    constructor(url) {
        this.url = new URL(url);
        this.readyState = 0;
        this.sent = [];
        ScriptedWS.all.push(this);
    }
    send(d) { this.sent.push(JSON.parse(d)); }
    close(code, reason) { this.readyState = 3; this.closed = { code, reason }; }
    open() { this.readyState = 1; this.onopen?.({}); }
    msg(o) { this.onmessage?.({ data: JSON.stringify(o) }); }
    drop(code = 1006) { this.readyState = 3; this.onclose?.({ code }); }
    refuse() { this.readyState = 3; this.onerror?.({}); }
    static last() { return ScriptedWS.all[ScriptedWS.all.length - 1]; }
}

const until = async (cond, ms = 3000) => {
    const end = Date.now() + ms;
    while (!cond()) {
        if (Date.now() > end) throw new Error('timed out: ' + cond);
        await new Promise((r) => setTimeout(r, 5));
    }
};

function client(extra = {}) {
    ScriptedWS.all = [];
    const c = connect({ url: 'http://127.0.0.1:9', token: jwt({ sub: 'alice' }), WebSocket: ScriptedWS,
        transport: 'websocket', reconnect: { baseMs: 10, maxMs: 40 }, idle: { enabled: false }, device: 'desk', ...extra });
    const events = [];
    for (const t of ['welcome', 'presence', 'state', 'error', 'self'])
        c.on(t, (a) => events.push([t, a]));
    return { c, events };
}

const rec = (user_id, version, status = 'online') => ({ user_id, status, version });

test('backoffDelay: full jitter within [0, min(max, base*2^n))', () => {
    assert.equal(backoffDelay(0, 500, 30000, () => 0), 0);
    assert.equal(backoffDelay(0, 500, 30000, () => 0.999999), 499);
    assert.equal(backoffDelay(3, 500, 30000, () => 0.999999), 3999);
    assert.equal(backoffDelay(10, 500, 30000, () => 0.999999), 29999);
    assert.equal(backoffDelay(1000, 500, 30000, () => 0.5), 15000);
    const draws = new Set(Array.from({ length: 200 }, () => backoffDelay(4, 100, 30000)));
    assert.ok(draws.size > 50, 'jittered, not a fixed delay');
    for (const d of draws) assert.ok(d >= 0 && d < 1600);
});

test('tokenSubject and validUserId', () => {
    assert.equal(tokenSubject(jwt({ sub: 'bob', exp: 1 })), 'bob');
    assert.equal(tokenSubject(jwt({ sub: 7 })), null);
    assert.equal(tokenSubject('a.b'), null);
    assert.equal(tokenSubject('x.!!!.y'), null);
    assert.ok(validUserId('a.b~c@d:e=f+g-h_i'));
    for (const bad of ['', 'batch', 'watch', 'connect', '.', '..', 'a b', 'x'.repeat(129), 7])
        assert.equal(validUserId(bad), false, String(bad));
});

test('readEventStream: events across chunk boundaries, CRLF split, comments, multi-line data', async () => {
    const text = ': watching\r\nretry: 2000\r\n\r\nevent: presence\r\nid: 17\r\ndata: {"a":\r\ndata: 1}\r\n\r\n: ping\n\nevent: presence\nid: 18\ndata: {"b":2}\n\n';
    for (const size of [1, 2, 3, 7, 1000]) {
        const bytes = new TextEncoder().encode(text);
        const body = new ReadableStream({
            start(ctl) {
                for (let i = 0; i < bytes.length; i += size) ctl.enqueue(bytes.slice(i, i + size));
                ctl.close();
            },
        });
        const got = [];
        await readEventStream(body, (e) => got.push(e));
        assert.deepEqual(got, [
            { event: 'presence', id: '17', data: '{"a":\n1}' },
            { event: 'presence', id: '18', data: '{"b":2}' },
        ], `chunk size ${size}`);
    }
});

test('readEventStream: a line longer than 1 MiB ends the stream with an error', async () => {
    const body = new ReadableStream({
        pull(ctl) { ctl.enqueue(new Uint8Array(65536).fill(0x61)); },
    });
    await assert.rejects(readEventStream(body, () => {}), /longer than 1 MiB/);
});

test('connect: the URL carries token, device and status; welcome opens; watch is sent', async () => {
    const { c, events } = client({ status: 'busy' });
    await until(() => ScriptedWS.all.length === 1);
    const ws = ScriptedWS.last();
    assert.equal(ws.url.pathname, '/api/v2/presence/connect');
    assert.equal(ws.url.protocol, 'ws:');
    assert.equal(ws.url.searchParams.get('device'), 'desk');
    assert.equal(ws.url.searchParams.get('status'), 'busy');
    assert.ok(ws.url.searchParams.get('access_token').startsWith('ey'));
    assert.equal(ws.url.searchParams.get('session_id'), null);
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 3, 'busy'), ping_interval_ms: 25000, grace_ms: 5000 });
    assert.equal(c.state, 'open');
    assert.equal(c.sessionId, 's1');
    assert.equal(c.self.version, 3);
    c.watch(['bob', 'carol']);
    assert.deepEqual(ws.sent, [{ type: 'watch', users: ['bob', 'carol'] }]);
    c.set({ status: 'online', message: 'hi', message_ttl: 60 });
    assert.deepEqual(ws.sent[1], { type: 'set', status: 'online', message: 'hi', message_ttl: 60 });
    c.set({ message: null });
    assert.deepEqual(ws.sent[2], { type: 'set', message: null });
    c.unwatch('carol');
    assert.deepEqual(ws.sent[3], { type: 'unwatch', users: ['carol'] });
    assert.ok(events.some(([t, a]) => t === 'welcome' && a.transport === 'websocket'));
    c.close();
});

test('close(): a bye, then a close with 1000 -- also when called before the handshake is done', async () => {
    const { c } = client();
    await until(() => ScriptedWS.all.length === 1);
    const ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 1, 'online'), ping_interval_ms: 25000, grace_ms: 5000 });
    c.close();
    assert.deepEqual(ws.sent, [{ type: 'bye' }]);
    assert.deepEqual(ws.closed, { code: 1000, reason: 'client closed' });
    assert.equal(c.state, 'closed');

    const { c: c2 } = client(); // (starts a new ScriptedWS.all)
    await until(() => ScriptedWS.all.length === 1);
    const ws2 = ScriptedWS.last();
    c2.close();
    assert.deepEqual(ws2.sent, []);
    assert.equal(ws2.closed, undefined);
    ws2.open(); // the server may already hold the session: signed out as soon as it opens
    assert.deepEqual(ws2.sent, [{ type: 'bye' }]);
    assert.deepEqual(ws2.closed, { code: 1000, reason: 'client closed' });
});

test('presence: duplicates and older versions are dropped; deleted users leave records', async () => {
    const { c, events } = client();
    await until(() => ScriptedWS.all.length === 1);
    const ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 1) });
    c.watch('bob');
    ws.msg({ type: 'presence', record: rec('bob', 5) });
    ws.msg({ type: 'presence', record: rec('bob', 5) });
    ws.msg({ type: 'presence', record: rec('bob', 4, 'away') });
    ws.msg({ type: 'presence', record: rec('bob', 7, 'busy') });
    ws.msg({ type: 'presence', record: rec('mallory', 9) }); // not watched
    ws.msg({ type: 'presence', record: { user_id: 'bob', deleted: true, version: 8 } });
    const got = events.filter(([t]) => t === 'presence').map(([, r]) => r.version);
    assert.deepEqual(got, [5, 7, 8]);
    assert.equal(c.records.has('bob'), false);
    ws.msg({ type: 'presence', record: { user_id: 'bob' } });
    ws.onmessage({ data: 'not json' });
    const errs = events.filter(([t]) => t === 'error').map(([, e]) => e.code);
    assert.deepEqual(errs, ['protocol', 'protocol']);
    c.close();
});

test('reconnect: backoff, resume with session_id within the grace, watches with since, a set made meanwhile', async () => {
    const { c, events } = client();
    await until(() => ScriptedWS.all.length === 1);
    let ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 1), grace_ms: 5000 });
    c.watch(['bob', 'carol', 'dave']);
    ws.msg({ type: 'presence', record: rec('bob', 12) });
    ws.msg({ type: 'presence', record: rec('carol', 30) });
    ws.drop(1006); // before dave's record came: dave is asked again without since
    assert.equal(c.state, 'reconnecting');
    const st = events.filter(([t, a]) => t === 'state' && a.state === 'reconnecting').pop()[1];
    assert.ok(st.delayMs >= 0 && st.delayMs < 10);
    c.set({ status: 'away' });
    await until(() => ScriptedWS.all.length === 2);
    ws = ScriptedWS.last();
    assert.equal(ws.url.searchParams.get('session_id'), 's1');
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 40), grace_ms: 5000 });
    assert.deepEqual(ws.sent, [
        { type: 'watch', users: ['bob', 'carol'], since: 30 },
        { type: 'watch', users: ['dave'] },
        { type: 'set', status: 'away' },
    ]);
    // A resume that re-sends what we have seen emits nothing twice.
    ws.msg({ type: 'presence', record: rec('carol', 30) });
    ws.msg({ type: 'presence', record: rec('carol', 31, 'busy') });
    assert.deepEqual(events.filter(([t, a]) => t === 'presence' && a.user_id === 'carol').map(([, a]) => a.version), [30, 31]);
    c.close();
});

test('reconnect: no session_id after the grace; code 4000 (resumed elsewhere) never steals it back', async () => {
    const { c, events } = client();
    await until(() => ScriptedWS.all.length === 1);
    let ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 1), grace_ms: 0 });
    ws.drop(1006);
    await until(() => ScriptedWS.all.length === 2);
    assert.equal(ScriptedWS.last().url.searchParams.get('session_id'), null, 'grace 0: nothing to resume');
    ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's2', user_id: 'alice', record: rec('alice', 2), grace_ms: 5000 });
    ws.drop(4000);
    await until(() => ScriptedWS.all.length === 3);
    assert.equal(ScriptedWS.last().url.searchParams.get('session_id'), null);
    assert.ok(events.some(([t, e]) => t === 'error' && e.code === 'session_taken'));
    c.close();
});

test('code 4001 (session ended from outside): a fatal error and no reconnect', async () => {
    const { c, events } = client();
    await until(() => ScriptedWS.all.length === 1);
    const ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 1), grace_ms: 5000 });
    ws.drop(4001);
    const e = events.find(([t]) => t === 'error');
    assert.ok(e, 'an error event');
    assert.equal(e[1].code, 'session_ended');
    assert.equal(e[1].fatal, true);
    assert.equal(c.state, 'closed');
    await new Promise((r) => setTimeout(r, 100)); // well past the backoff (10-40 ms)
    assert.equal(ScriptedWS.all.length, 1, 'no reconnect');
});

test('handshake failures: retried with backoff; in auto mode two refusals fall back to SSE + REST', async () => {
    const pending = [];
    const { c, events } = client({ transport: 'auto', wsRetryMs: 0, fetch: (url, init) => { pending.push([url, init]); return new Promise(() => {}); } });
    await until(() => ScriptedWS.all.length === 1);
    ScriptedWS.last().refuse();
    assert.equal(c.state, 'reconnecting');
    await until(() => ScriptedWS.all.length === 2);
    ScriptedWS.last().drop(1006); // never opened
    assert.equal(c.state, 'fallback');
    assert.equal(c.transport, 'sse');
    assert.match(events.find(([t]) => t === 'error')[1].message, /falling back to SSE \+ REST/);
    await until(() => pending.length >= 1);
    const [url, init] = pending[0];
    assert.equal(url, 'http://127.0.0.1:9/api/v2/presence/alice');
    assert.equal(init.method, 'PUT');
    const body = JSON.parse(init.body);
    assert.match(body.session, /^js-[0-9a-f]{24}$/);
    assert.equal(body.device, 'desk');
    assert.equal(body.status, 'online');
    assert.equal(init.headers.Authorization.split(' ')[0], 'Bearer');
    c.close();
});

test('handshake that never completes: the open timeout counts it as a failure', async () => {
    const { c } = client({ openTimeoutMs: 30 });
    await until(() => ScriptedWS.all.length === 2, 2000);
    assert.equal(c.state, 'reconnecting');
    c.close();
});

test('idle: an online session goes away without input and comes back on input; busy stays busy', async () => {
    const input = new EventTarget();
    const { c } = client({ idle: { enabled: true, minutes: 0.001, target: input } }); // 60 ms
    await until(() => ScriptedWS.all.length === 1);
    const ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 1) });
    await until(() => ws.sent.some((m) => m.type === 'set' && m.status === 'away'));
    assert.equal(c.idle, true);
    input.dispatchEvent(new Event('pointerdown'));
    assert.deepEqual(ws.sent.at(-1), { type: 'set', status: 'online' });
    assert.equal(c.idle, false);
    c.set({ status: 'busy' });
    const n = ws.sent.length;
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(ws.sent.length, n, 'busy is not turned away');
    c.setIdle({ enabled: false });
    c.close();
});

test('idle off: input sends at most one activity per activityEveryMs', async () => {
    const input = new EventTarget();
    const { c } = client({ idle: { enabled: true, minutes: 10, target: input }, activityEveryMs: 100000 });
    await until(() => ScriptedWS.all.length === 1);
    const ws = ScriptedWS.last();
    ws.open();
    ws.msg({ type: 'welcome', session_id: 's1', user_id: 'alice', record: rec('alice', 1) });
    for (let i = 0; i < 5; i++) input.dispatchEvent(new Event('keydown'));
    assert.deepEqual(ws.sent, [{ type: 'activity' }]);
    c.close();
});
