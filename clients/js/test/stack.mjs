/* stack.mjs -- starts the real service for the JS client's tests: build/bin/presenced (a whole
 * center node: store-node, cache-nodes, gateway) on a free loopback port, its data in a fresh temp
 * dir, a JWT_SECRET of the test's own; tokens from build/bin/presence-token with the same secret.
 *
 * The ready line ("ready http=127.0.0.1:PORT ...") is awaited with a deadline, never a sleep; stop()
 * sends SIGTERM to that pid (never a name), waits for the exit, SIGKILLs after a deadline, and
 * reports an unclean exit as a failure. PRESENCE_BIN points at the binaries to test (default: the
 * checkout's build/bin).
 *
 * Also: a probe that tells whether the gateway serves the WebSocket endpoint yet, so its tests
 * skip with the reason instead of failing while it is being built -- and run the moment it exists.
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { randomBytes } from 'node:crypto';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '../../..');
export const BIN = process.env.PRESENCE_BIN || join(ROOT, 'build/bin');

/** Poll cond() every 20 ms until it returns a truthy value or ms pass. */
export async function waitFor(cond, ms, what) {
    const end = Date.now() + ms;
    for (;;) {
        const v = await cond();
        if (v)
            return v;
        if (Date.now() > end)
            throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
    }
}

export class Stack {
    /** @param {Record<string,string>} [env] extra environment for presenced */
    static async start(env = {}) {
        const s = new Stack();
        s.dir = mkdtempSync(join(tmpdir(), 'presence-js-'));
        s.secret = randomBytes(24).toString('hex');
        const bin = join(BIN, 'presenced');
        if (!existsSync(bin))
            throw new Error(`${bin} is missing: run make first (or set PRESENCE_BIN)`);
        s.env = {
            PATH: process.env.PATH,
            SERVICE_PORT: '0', SERVICE_ADDR: '127.0.0.1', DATA_DIR: s.dir, JWT_SECRET: s.secret,
            CACHE_NODES: '1', LOG_LEVEL: 'warn', ...env,
        };
        s.out = '';
        s.err = '';
        s.proc = spawn(bin, [], { env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
        s.proc.stdout.on('data', (d) => { s.out += d; });
        s.proc.stderr.on('data', (d) => { s.err += d; });
        s.exit = new Promise((r) => s.proc.on('exit', (code, signal) => r({ code, signal })));
        let exited = null;
        s.exit.then((e) => { exited = e; });
        const m = await waitFor(() => {
            if (exited)
                throw new Error(`presenced exited (${JSON.stringify(exited)}) before ready:\n${s.err.slice(-2000)}`);
            return /^ready http=([0-9.]+):(\d+) /m.exec(s.out);
        }, 30000, 'the ready line of presenced');
        s.port = Number(m[2]);
        s.url = `http://127.0.0.1:${s.port}`;
        return s;
    }

    /** A JWT for sub (scope optional), signed by presence-token with this stack's secret. */
    token(sub, scope) {
        const args = scope ? [sub, scope] : [sub];
        return execFileSync(join(BIN, 'presence-token'), args,
            { env: { PATH: process.env.PATH, JWT_SECRET: this.secret, DATA_DIR: this.dir } }).toString().trim();
    }

    /** fetch against the stack; body objects are sent as JSON. Resolves {status, json, headers}. */
    async http(method, path, { token, body, headers = {} } = {}) {
        const h = { ...headers };
        if (token)
            h.Authorization = 'Bearer ' + token;
        const res = await fetch(this.url + path, {
            method, headers: h,
            body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
        });
        const text = await res.text();
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        return { status: res.status, json, text, headers: res.headers };
    }

    /** Stop presenced by its pid: SIGTERM, then SIGKILL after 15 s. Throws on an unclean exit. */
    async stop() {
        if (!this.proc)
            return;
        const p = this.proc;
        this.proc = null;
        if (p.exitCode === null && p.signalCode === null)
            p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 15000);
        const e = await this.exit;
        clearTimeout(t);
        rmSync(this.dir, { recursive: true, force: true });
        if (e.code !== 0)
            throw new Error(`presenced did not exit cleanly: ${JSON.stringify(e)}\n${this.err.slice(-2000)}`);
    }

    /**
     * Whether the gateway serves the WebSocket endpoint: a real RFC 6455 handshake on
     * /api/v2/presence/connect with a valid token. Returns null when it does, else the reason to
     * skip. "Does not" is only what a gateway without the route answers: 404, or the 400 of
     * `connect` taken as a user id. Any other answer runs the tests (a broken endpoint must fail
     * them, not skip them).
     */
    async wsProbe(token) {
        const r = await rawHandshake(this.port, '/api/v2/presence/connect?access_token=' + encodeURIComponent(token));
        const asUser = r.status === 400 && /"error":"invalid user_id/.test(r.body);
        return r.status === 404 || asUser
            ? `the gateway has no /api/v2/presence/connect yet (a WebSocket handshake answered ${r.status}${asUser ? ': connect taken as a user id' : ''})`
            : null;
    }
}

/**
 * A WebSocket handshake over node:net: resolves {status, body} (body: what arrived after the
 * header within the deadline, at most 64 KiB), status 0 on a connection error or timeout.
 */
export function rawHandshake(port, path) {
    return new Promise((resolvePromise) => {
        const sock = net.connect(port, '127.0.0.1');
        let buf = '';
        let settled = false;
        const done = () => {
            if (settled) return;
            settled = true;
            sock.destroy();
            const m = /^HTTP\/1\.1 (\d{3})/.exec(buf);
            const sep = buf.indexOf('\r\n\r\n');
            resolvePromise({ status: m ? Number(m[1]) : 0, head: sep < 0 ? buf : buf.slice(0, sep), body: sep < 0 ? '' : buf.slice(sep + 4) });
        };
        sock.setTimeout(5000, done);
        sock.on('error', done);
        sock.on('close', done);
        sock.on('connect', () => {
            sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
        });
        sock.on('data', (d) => {
            buf += d.toString('latin1');
            const sep = buf.indexOf('\r\n\r\n');
            if (sep < 0) {
                if (buf.length > 65536) done();
                return;
            }
            const cl = /\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, sep));
            // A 101 has no body to wait for; others end at Content-Length (or the close).
            if (/^HTTP\/1\.1 101/.test(buf) || (cl && buf.length >= sep + 4 + Number(cl[1])) || buf.length > 65536)
                done();
        });
    });
}

/** The WebSocket constructor node offers (global: node 22, or 20 with --experimental-websocket). */
export const NodeWebSocket = globalThis.WebSocket;
export const noWebSocketReason = NodeWebSocket ? null
    : `this node (${process.version}) has no WebSocket (node 22, or node >= 20.10 with --experimental-websocket)`;

/** Collects a client's events; next(type, pred) resolves with the first matching event. */
export class Events {
    constructor(client, types = ['presence', 'state', 'error', 'welcome', 'self']) {
        this.log = [];
        this.waiters = [];
        for (const t of types)
            client.on(t, (arg) => {
                const entry = { type: t, arg, used: false };
                this.log.push(entry);
                const w = this.waiters.find((x) => x.type === t && x.pred(arg));
                if (w) {
                    entry.used = true;
                    this.waiters = this.waiters.filter((x) => x !== w);
                    w.resolve(arg);
                }
            });
    }

    /** The first event of `type` matching pred, already logged or to come, within ms. */
    next(type, pred = () => true, ms = 10000) {
        const seen = this.log.find((e) => e.type === type && pred(e.arg) && !e.used);
        if (seen) {
            seen.used = true;
            return Promise.resolve(seen.arg);
        }
        return new Promise((res, rej) => {
            const w = { type, pred, resolve: (a) => { clearTimeout(t); res(a); } };
            const t = setTimeout(() => {
                this.waiters = this.waiters.filter((x) => x !== w);
                rej(new Error(`no '${type}' event matching ${pred} within ${ms} ms; got: ` +
                    JSON.stringify(this.log.map((e) => [e.type, e.arg && (e.arg.state || e.arg.status || e.arg.message)]).slice(-20))));
            }, ms);
            this.waiters.push(w);
        });
    }

    errors() {
        return this.log.filter((e) => e.type === 'error').map((e) => e.arg.message);
    }
}

export function readJson(path) {
    return JSON.parse(readFileSync(path, 'utf8'));
}
