/* proxy.mjs -- a TCP proxy on loopback between a client under test and the real gateway: the
 * network a client meets in the wild, on demand.
 *
 *   cut()            drops every connection now (a network blip: both sides see a reset)
 *   down() / up()    while down, new connections are dropped at once (an outage)
 *   blockUpgrade     a connection whose first request asks for `Upgrade: websocket` gets a 403
 *                    and is closed (a corporate proxy that only speaks plain HTTP); everything else
 *                    is forwarded byte for byte
 *
 * It only forwards bytes: the gateway behind it is the real one.
 */
import net from 'node:net';

export class Proxy {
    static async start(targetPort, { blockUpgrade = false } = {}) {
        const p = new Proxy();
        p.targetPort = targetPort;
        p.blockUpgrade = blockUpgrade;
        p.isDown = false;
        p.socks = new Set();
        p.upgradesRefused = 0;
        p.server = net.createServer((c) => p._accept(c));
        await new Promise((r) => p.server.listen(0, '127.0.0.1', r));
        p.port = p.server.address().port;
        p.url = `http://127.0.0.1:${p.port}`;
        return p;
    }

    _track(s) {
        this.socks.add(s);
        s.on('close', () => this.socks.delete(s));
        s.on('error', () => {});
    }

    _accept(c) {
        this._track(c);
        if (this.isDown) {
            c.destroy();
            return;
        }
        let head = Buffer.alloc(0);
        const onData = (d) => {
            head = Buffer.concat([head, d]);
            const end = head.indexOf('\r\n\r\n');
            if (end < 0 && head.length < 65536)
                return;
            c.off('data', onData);
            c.pause();
            const text = head.subarray(0, end < 0 ? head.length : end).toString('latin1');
            if (this.blockUpgrade && /^upgrade:\s*websocket\s*$/im.test(text)) {
                this.upgradesRefused++;
                const body = 'websocket blocked by proxy';
                c.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
                return;
            }
            const u = net.connect(this.targetPort, '127.0.0.1');
            this._track(u);
            u.on('connect', () => {
                u.write(head);
                c.pipe(u);
                u.pipe(c);
                c.resume();
            });
            const kill = () => { c.destroy(); u.destroy(); };
            u.on('close', kill);
            c.on('close', kill);
        };
        c.on('data', onData);
    }

    /** Drop every connection now. */
    cut() {
        for (const s of this.socks)
            s.destroy();
    }

    down() {
        this.isDown = true;
        this.cut();
    }

    up() {
        this.isDown = false;
    }

    async stop() {
        this.cut();
        await new Promise((r) => this.server.close(r));
    }
}
