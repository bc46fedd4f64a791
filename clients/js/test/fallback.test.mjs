/* fallback.test.mjs -- the client over REST + Server-Sent Events against the real stack
 * (build/bin/presenced): the path it takes where WebSocket is blocked. A REST session of its own
 * (PUT/heartbeat with "session"), a watch stream resumed with since, the errors an app sees, and
 * the REST helpers (preferred status / invisible mode, sessions).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../presence.js';
import { Stack, Events, waitFor, NodeWebSocket, noWebSocketReason } from './stack.mjs';
import { Proxy } from './proxy.mjs';

let stack;
const clients = [];
const fast = { baseMs: 50, maxMs: 400 };

function open(opts) {
    const c = connect({ url: stack.url, transport: 'sse', reconnect: fast, idle: { enabled: false }, ...opts });
    clients.push(c);
    return { c, ev: new Events(c) };
}

before(async () => { stack = await Stack.start(); });
after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await stack.stop();
});

test('sse: a session opens with the chosen status and device, and a watcher sees it come and go', async () => {
    const a = open({ token: stack.token('fa1'), device: 'laptop', status: 'online' });
    const w = await a.ev.next('welcome');
    assert.equal(w.transport, 'sse');
    assert.equal(w.user_id, 'fa1');
    assert.match(w.session_id, /^js-[0-9a-f]{24}$/);
    assert.equal(a.c.state, 'fallback');
    assert.equal(w.record.status, 'online');
    assert.equal(w.record.sessions, 1);
    assert.equal(w.record.source, 'session');

    const b = open({ token: stack.token('fb1') });
    b.c.watch(['fa1']);
    let r = await b.ev.next('presence', (x) => x.user_id === 'fa1');
    assert.equal(r.status, 'online');
    assert.equal(r.sessions, 1);

    a.c.set({ status: 'busy', message: 'In a meeting' });
    r = await b.ev.next('presence', (x) => x.user_id === 'fa1' && x.status === 'busy');
    assert.equal(r.message, 'In a meeting');
    assert.deepEqual(b.c.records.get('fa1'), r);

    await a.c.close();
    r = await b.ev.next('presence', (x) => x.user_id === 'fa1' && x.status === 'offline');
    assert.equal(r.sessions, 0);
    assert.equal(r.message, undefined, 'the last session ending clears the message');
    assert.deepEqual(b.ev.errors(), []);
});

test('sse: a watch stream cut by the network resumes with since and misses no change', async () => {
    const proxy = await Proxy.start(stack.port);
    try {
        const tokA = stack.token('fa2');
        const a = open({ token: tokA });
        await a.ev.next('welcome');
        const b = open({ token: stack.token('fb2'), url: proxy.url });
        b.c.watch('fa2');
        const first = await b.ev.next('presence', (x) => x.user_id === 'fa2' && x.status === 'online');

        proxy.down();
        // Two changes while the watcher is cut off: with since both arrive, in order; a resume
        // without since would show only the latest state.
        a.c.set({ status: 'busy' });
        await waitFor(async () => (await stack.http('GET', '/api/v2/presence/fa2')).json.data.fa2.status === 'busy', 5000, 'busy stored');
        a.c.set({ status: 'away' });
        await waitFor(async () => (await stack.http('GET', '/api/v2/presence/fa2')).json.data.fa2.status === 'away', 5000, 'away stored');
        proxy.up();

        const busy = await b.ev.next('presence', (x) => x.user_id === 'fa2' && x.status === 'busy');
        const away = await b.ev.next('presence', (x) => x.user_id === 'fa2' && x.status === 'away');
        assert.ok(first.version < busy.version && busy.version < away.version);
        const seen = b.ev.log.filter((e) => e.type === 'presence' && e.arg.user_id === 'fa2').map((e) => e.arg.version);
        assert.deepEqual(seen, [...new Set(seen)].sort((x, y) => x - y), 'each version once, in order');
    } finally {
        await proxy.stop();
    }
});

test('sse: a user added to the watch list later gets its current record, however old', async () => {
    const old = open({ token: stack.token('fold') });
    const wOld = await old.ev.next('welcome');
    const young = open({ token: stack.token('fyoung') });
    const wYoung = await young.ev.next('welcome');
    assert.ok(wOld.record.version < wYoung.record.version);
    const b = open({ token: stack.token('fb10') });
    b.c.watch('fyoung');
    await b.ev.next('presence', (x) => x.user_id === 'fyoung');
    b.c.watch('fold');
    const r = await b.ev.next('presence', (x) => x.user_id === 'fold');
    assert.equal(r.status, 'online');
    assert.equal(r.version, wOld.record.version);
});

test('sse: message_ttl clears the message as an ordinary change', async () => {
    const a = open({ token: stack.token('fa3') });
    await a.ev.next('welcome');
    const b = open({ token: stack.token('fb3') });
    b.c.watch('fa3');
    await b.ev.next('presence', (x) => x.user_id === 'fa3');
    a.c.set({ message: 'brb', message_ttl: 1 });
    const withMsg = await b.ev.next('presence', (x) => x.user_id === 'fa3' && x.message === 'brb');
    assert.ok(withMsg.message_expires_at);
    const cleared = await b.ev.next('presence', (x) => x.user_id === 'fa3' && x.version > withMsg.version, 5000);
    assert.equal(cleared.message, undefined);
    assert.equal(cleared.status, 'online');
});

test('sse: invisible mode (a preferred offline) hides the live session from others', async () => {
    const a = open({ token: stack.token('fa4'), device: 'desk' });
    await a.ev.next('welcome');
    const b = open({ token: stack.token('fb4') });
    b.c.watch('fa4');
    await b.ev.next('presence', (x) => x.user_id === 'fa4' && x.status === 'online');

    const own = await a.c.setPreferred({ status: 'offline', ttl: 600 });
    assert.equal(own.status, 'offline');
    assert.equal(own.source, 'preferred');
    const seen = await b.ev.next('presence', (x) => x.user_id === 'fa4' && x.status === 'offline');
    assert.equal(seen.sessions, 0, 'others see no device');
    const pub = await stack.http('GET', '/api/v2/presence/fa4');
    assert.equal(pub.json.data.fa4.status, 'offline');
    assert.equal(pub.json.data.fa4.sessions, 0);
});

test('sse: in invisible mode the user and admins still see the real session count', async () => {
    const tok = stack.token('fa4b');
    const a = open({ token: tok, device: 'desk' });
    await a.ev.next('welcome');
    const own = await a.c.setPreferred({ status: 'offline', ttl: 600 });
    const admin = await stack.http('GET', '/api/v2/presence/fa4b', { token: stack.token('ops', 'presence:admin') });
    assert.equal(own.sessions, 1, 'the PUT answers the user with the real count');
    assert.equal(admin.json.data.fa4b.sessions, 1);
    const mine = await stack.http('GET', '/api/v2/presence/fa4b', { token: tok });
    assert.equal(mine.json.data.fa4b.sessions, 1);
    assert.equal(mine.json.data.fa4b.status, 'offline');
});

test('sse: clearPreferred() ends invisible mode early: others see the device again, the message stays', async () => {
    const a = open({ token: stack.token('fa4c'), device: 'desk' });
    await a.ev.next('welcome');
    const b = open({ token: stack.token('fb4c') });
    b.c.watch('fa4c');
    await b.ev.next('presence', (x) => x.user_id === 'fa4c' && x.status === 'online');
    await a.c.setPreferred({ status: 'offline', ttl: 600, message: 'heads down' });
    await b.ev.next('presence', (x) => x.user_id === 'fa4c' && x.status === 'offline');
    const own = await a.c.clearPreferred();
    assert.equal(own.status, 'online');
    assert.equal(own.source, 'session');
    assert.equal(own.sessions, 1);
    assert.equal(own.message, 'heads down');
    assert.equal(own.preferred_until, undefined);
    const seen = await b.ev.next('presence', (x) => x.user_id === 'fa4c' && x.status === 'online');
    assert.equal(seen.sessions, 1);
    assert.equal(seen.message, 'heads down');
    assert.equal(a.c.self.status, 'online', 'the client keeps the answer as its own record');
});

test('sse: a bad token is a fatal 401 error naming the rule, and the client stops', async () => {
    const a = open({ token: stack.token('fa5') + 'x', userId: 'fa5' });
    const e = await a.ev.next('error');
    assert.equal(e.status, 401);
    assert.equal(e.code, 'unauthorized');
    assert.equal(e.fatal, true);
    assert.equal(e.message, 'invalid token');
    await a.ev.next('state', (s) => s.state === 'closed');
    assert.equal(a.c.state, 'closed');
});

test('sse: invalid input is refused before anything is sent, naming the rule', () => {
    const a = open({ token: stack.token('fa6') });
    assert.throws(() => a.c.set({ status: 'offline' }), /invalid status: must be one of online, away, busy/);
    assert.throws(() => a.c.set({ message: 'x'.repeat(257) }), /message is longer than 256 bytes/);
    assert.throws(() => a.c.set({ message: 'a\u0007b' }), /without control characters/);
    assert.throws(() => a.c.set({ message_ttl: 5 }), /message_ttl needs a non-empty message/);
    assert.throws(() => a.c.set({ message: 'x', message_ttl: 0 }), /message_ttl must be an integer from 1 to 604800/);
    assert.throws(() => a.c.set({}), /give at least one of status, message, message_ttl/);
    assert.throws(() => a.c.watch(['ok', 'b!d']), /invalid user_id: b!d/);
    assert.throws(() => a.c.watch('watch'), /invalid user_id: watch/);
    assert.throws(() => connect({ url: stack.url, token: 'not-a-jwt' }), /userId is required/);
});

test('sse: the REST session is kept alive by heartbeats past its ttl', async () => {
    const a = open({ token: stack.token('fa7'), sessionTtl: 2 });
    await a.ev.next('welcome');
    const b = open({ token: stack.token('fb7') });
    b.c.watch('fa7');
    await b.ev.next('presence', (x) => x.user_id === 'fa7' && x.status === 'online');
    const until = Date.now() + 5000; // 2.5 ttls
    await waitFor(() => Date.now() > until, 6000, 'two and a half session ttls');
    const r = await stack.http('GET', '/api/v2/presence/fa7');
    assert.equal(r.json.data.fa7.status, 'online');
    assert.equal(r.json.data.fa7.sessions, 1);
    assert.equal(b.ev.log.filter((e) => e.type === 'presence' && e.arg.status === 'offline').length, 0);
});

test('sse: sessions() lists each device and endSession() signs one out', async () => {
    const tok = stack.token('fa8');
    const lap = open({ token: tok, device: 'laptop' });
    const phone = open({ token: tok, device: 'phone', status: 'away' });
    const wl = await lap.ev.next('welcome');
    const wp = await phone.ev.next('welcome');
    const list = await lap.c.sessions();
    const byId = Object.fromEntries(list.map((s) => [s.session_id, s]));
    assert.equal(list.length, 2);
    assert.equal(byId[wl.session_id].device, 'laptop');
    assert.equal(byId[wl.session_id].status, 'online');
    assert.equal(byId[wp.session_id].device, 'phone');
    assert.equal(byId[wp.session_id].status, 'away');
    const rec = await lap.c.endSession(wp.session_id);
    assert.equal(rec.sessions, 1);
    await assert.rejects(lap.c.endSession(wp.session_id), (e) => e.status === 404);
});

test('auto: where a proxy refuses the WebSocket upgrade, the client falls back to SSE + REST', async (t) => {
    if (noWebSocketReason) {
        t.skip(noWebSocketReason);
        return;
    }
    const proxy = await Proxy.start(stack.port, { blockUpgrade: true });
    try {
        const c = connect({ url: proxy.url, token: stack.token('fa9'), WebSocket: NodeWebSocket, transport: 'auto',
            reconnect: fast, idle: { enabled: false }, wsRetryMs: 0 });
        clients.push(c);
        const ev = new Events(c);
        const w = await ev.next('welcome');
        assert.equal(w.transport, 'sse');
        assert.equal(c.state, 'fallback');
        assert.equal(proxy.upgradesRefused, 2, 'two refused handshakes, then the fallback');
        assert.match(ev.errors()[0], /falling back to SSE \+ REST/);
        c.watch('fa9');
        const self = await ev.next('presence', (x) => x.user_id === 'fa9');
        assert.equal(self.status, 'online');
        assert.equal(self.sessions, 1);
    } finally {
        await proxy.stop();
    }
});
