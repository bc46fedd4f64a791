/* app.js -- the live presence page (served by the gateway at / and /ui/, UI_ENABLED).
 *
 * Sign in with a token (kept in sessionStorage: this tab only), or on a development node (`make
 * run`, where POST /api/v2/dev/token exists) "try as" any name. Then: your status, message and
 * invisible mode, your devices (GET .../{id}/sessions), and a roster of watched users updating live
 * through presence.js (WebSocket, or SSE + REST where WebSocket is blocked).
 *
 * No framework, no build step: DOM built with textContent only (every string from the network is
 * shown as text, never parsed as HTML). The API is this page's own origin; `?api=` may name
 * another one only on loopback (a development aid that cannot send a token elsewhere: serving
 * these files from another server, tests/browser --serve-ui). The gateway's own CSP
 * (connect-src 'self') pins the page it serves to that gateway.
 */
import { connect, tokenSubject, validUserId } from './presence.js';

const $ = (id) => document.getElementById(id);
const api = apiBase();
let client = null;
let relTimer = null;

function apiBase() {
    const q = new URLSearchParams(location.search).get('api');
    const loop = /^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/;
    return q && loop.test(q) && loop.test(location.origin) ? q : location.origin;
}

/* ---- helpers ---- */

function ago(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return '';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 45) return 'just now';
    const m = Math.round(s / 60);
    if (m < 60) return `${m} min ago`;
    const h = Math.round(m / 60);
    if (h < 48) return `${h} h ago`;
    return `${Math.round(h / 24)} days ago`;
}

function describe(rec) {
    const parts = [rec.status || 'offline'];
    if (rec.status === 'offline' || !rec.status) {
        if (rec.last_seen) parts.push(`last seen ${ago(rec.last_seen)}`);
    } else if (typeof rec.sessions === 'number') {
        parts.push(rec.sessions === 1 ? '1 device' : `${rec.sessions} devices`);
    }
    return parts.join(' · ');
}

function el(tag, props = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
        if (k === 'text') e.textContent = v;
        else if (k.startsWith('data-') || k.startsWith('aria-')) e.setAttribute(k, v);
        else e[k] = v;
    }
    for (const k of kids) if (k) e.append(k);
    return e;
}

function showError(id, msg) {
    $(id).textContent = msg || '';
}

/* ---- sign in ---- */

async function probeDevToken() {
    // The box is shown only where the node signs tokens for us (a `make run` node, from its own
    // machine): GET says so, without a failed request in the console anywhere else.
    try {
        const r = await fetch(api + '/api/v2/dev/token', { cache: 'no-store' });
        const j = r.status === 200 ? await r.json() : null;
        $('try-form').hidden = !(j && j.available === true);
    } catch {
        $('try-form').hidden = true;
    }
}

async function tryAs(sub) {
    const r = await fetch(api + '/api/v2/dev/token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sub }) });
    const j = await r.json().catch(() => null);
    if (r.status !== 200 || !j || typeof j.token !== 'string')
        throw new Error((j && j.error) || `the node answered ${r.status}`);
    return j.token;
}

function defaultDevice() {
    return /Mobi|Android|iPhone/i.test(navigator.userAgent) ? 'phone' : 'browser';
}

function signIn(token, device) {
    const user = tokenSubject(token);
    if (!user || !validUserId(user))
        throw new Error('this is not a token with a valid user (sub claim)');
    sessionStorage.setItem('presence.token', token);
    sessionStorage.setItem('presence.device', device);
    start(token, user, device);
}

function signOut() {
    if (client) client.close();
    client = null;
    clearInterval(relTimer);
    sessionStorage.removeItem('presence.token');
    $('signin').hidden = false;
    $('me').hidden = true;
    $('roster-card').hidden = true;
    $('roster').replaceChildren();
    setConn('signed-out', 'Not signed in');
}

function setConn(state, text) {
    $('conn').dataset.state = state;
    $('conn').textContent = text;
}

/* ---- signed in ---- */

function watchedKey(user) {
    return 'presence.watch.' + user;
}

function start(token, user, device) {
    $('signin').hidden = true;
    $('me').hidden = false;
    $('roster-card').hidden = false;
    $('me-name').textContent = user;
    $('device').value = device;
    setConn('connecting', 'Connecting…');
    const idleOn = $('idle-detect').checked;
    client = connect({ url: api, token, device, idle: { enabled: idleOn, minutes: 5 } });
    client.on('state', (s) => {
        const how = s.transport === 'sse' ? ' (SSE fallback)' : s.transport === 'websocket' ? ' (WebSocket)' : '';
        const text = { open: 'Live', fallback: 'Live', reconnecting: 'Reconnecting…', connecting: 'Connecting…', closed: 'Disconnected' }[s.state] || s.state;
        setConn(s.state, text + (s.state === 'open' || s.state === 'fallback' ? how : ''));
    });
    client.on('error', (e) => {
        if (e.fatal) {
            showError('signin-error', e.message);
            signOut();
        } else if (e.code === 'server' || e.code === 'http') {
            showError('app-error', e.message);
        }
    });
    client.on('welcome', () => { refreshSessions(); });
    let devices = -1;
    client.on('self', (rec) => {
        renderMe(rec);
        if (typeof rec.sessions === 'number' && rec.sessions !== devices) {
            devices = rec.sessions;
            refreshSessions();
        }
    });
    client.on('presence', (rec) => {
        if (rec.user_id === user) renderMe(rec);
        renderRoster();
    });
    let saved = [];
    try { saved = JSON.parse(localStorage.getItem(watchedKey(user)) || '[]').filter(validUserId); } catch { saved = []; }
    client.watch([user, ...saved]);
    renderRoster();
    clearInterval(relTimer);
    relTimer = setInterval(() => { renderRoster(); if (client && client.self) renderMe(client.self); }, 30000);
}

function renderMe(rec) {
    const status = rec.status || 'offline';
    $('me-dot').dataset.status = status;
    let text = `You appear ${status} to others`;
    if (rec.source === 'preferred' && status === 'offline') text = 'You are invisible: others see you offline';
    if (typeof rec.sessions === 'number') text += ` · ${rec.sessions === 1 ? '1 device' : rec.sessions + ' devices'} connected`;
    if (rec.message) text += ` · “${rec.message}”`;
    $('me-summary').textContent = text;
    $('invisible').checked = rec.source === 'preferred' && status === 'offline';
}

async function refreshSessions() {
    if (!client) return;
    try {
        const list = await client.sessions();
        $('sessions-note').textContent = list.length ? '' : 'No live device.';
        $('sessions').replaceChildren(...list.map((s) => {
            const mine = s.session_id === client.sessionId;
            const btn = mine ? el('span', { className: 'meta', text: 'this device' })
                : el('button', { type: 'button', className: 'link', text: 'Sign out', 'aria-label': `Sign out ${s.device || s.session_id}`,
                    onclick: async () => { try { await client.endSession(s.session_id); } catch (e) { showError('app-error', e.message); } refreshSessions(); } });
            return el('li', { 'data-session': s.session_id },
                el('span', { className: 'dot', 'data-status': s.status, 'aria-hidden': 'true' }),
                el('span', { className: 'who', text: `${s.device || 'unnamed device'} — ${s.status}` }),
                btn,
                el('span', { className: 'meta', text: `connected ${ago(s.connected_at)}, last seen ${ago(s.last_seen)}` }));
        }));
    } catch (e) {
        $('sessions').replaceChildren();
        $('sessions-note').textContent = e.status === 404 ? 'This server does not list devices yet.' : `Devices could not be listed: ${e.message}`;
    }
}

function renderRoster() {
    if (!client) return;
    const users = client.watching().filter((u) => u !== client.userId);
    $('roster-empty').hidden = users.length > 0;
    const items = users.map((u) => {
        const rec = client.records.get(u) || { user_id: u, status: 'offline' };
        const known = client.records.has(u);
        const status = rec.status || 'offline';
        return el('li', { 'data-user': u, 'data-status': status, 'data-sessions': String(rec.sessions ?? '') },
            el('span', { className: 'dot', 'data-status': status, 'aria-hidden': 'true' }),
            el('span', { className: 'who', text: u }),
            el('button', { type: 'button', className: 'link', text: 'Remove', 'aria-label': `Stop watching ${u}`, onclick: () => unwatch(u) }),
            el('span', { className: 'meta', text: known ? describe(rec) : 'no presence yet' }),
            rec.message ? el('span', { className: 'msg', text: rec.message }) : null);
    });
    $('roster').replaceChildren(...items);
}

function saveWatched() {
    localStorage.setItem(watchedKey(client.userId), JSON.stringify(client.watching().filter((u) => u !== client.userId)));
}

function unwatch(u) {
    client.unwatch(u);
    saveWatched();
    renderRoster();
}

/* ---- wiring ---- */

$('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    showError('signin-error', '');
    try {
        signIn($('token').value.trim(), $('device').value.trim() || defaultDevice());
    } catch (e) {
        showError('signin-error', e.message);
    }
});

$('try-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError('signin-error', '');
    const sub = $('try-sub').value.trim();
    try {
        signIn(await tryAs(sub), $('device').value.trim() || defaultDevice());
    } catch (e) {
        showError('signin-error', e.message);
    }
});

$('signout').addEventListener('click', signOut);

$('status-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    showError('app-error', '');
    const status = new FormData(ev.target).get('status');
    const message = $('message').value.trim();
    const ttl = $('message-ttl').value;
    try {
        const fields = { status };
        if (message) {
            fields.message = message;
            if (ttl) fields.message_ttl = Number(ttl);
        }
        client.set(fields);
    } catch (e) {
        showError('app-error', e.message);
    }
});

$('clear-message').addEventListener('click', () => {
    $('message').value = '';
    try { client.set({ message: null }); } catch (e) { showError('app-error', e.message); }
});

$('invisible').addEventListener('change', async (ev) => {
    showError('app-error', '');
    const message = client.self && client.self.message;
    try {
        if (ev.target.checked)
            await client.setPreferred({ status: 'offline', ttl: 8 * 3600, message: message || undefined });
        else // the devices decide again (DELETE .../preferred keeps the message)
            await client.clearPreferred();
    } catch (e) {
        ev.target.checked = !ev.target.checked;
        showError('app-error', e.message);
    }
});

$('idle-detect').addEventListener('change', (ev) => {
    if (client) client.setIdle({ enabled: ev.target.checked });
});

$('watch-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    showError('app-error', '');
    const users = $('watch-users').value.split(',').map((s) => s.trim()).filter(Boolean);
    try {
        client.watch(users);
        saveWatched();
        $('watch-users').value = '';
        renderRoster();
    } catch (e) {
        showError('app-error', e.message);
    }
});

$('device').placeholder = defaultDevice();
probeDevToken();
const saved = sessionStorage.getItem('presence.token');
if (saved) {
    try { signIn(saved, sessionStorage.getItem('presence.device') || defaultDevice()); } catch { signOut(); }
}
