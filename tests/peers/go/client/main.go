// go-echo-client: an independent WebSocket client (gorilla/websocket) used by
// wsecho's interop tests (tests/it/interop.rs) to check an echo server at -url.
// It sends text, unicode text, binary 0..255, a 1 MiB binary message and a
// ping, checks every echo (type and bytes) and the pong, then sends
// Close(1000, "bye") and expects the server's close reply with code 1000.
// Prints "ok" and exits 0, or prints what failed and exits 1. Deadline: 20 s.
// For a wss:// URL, -ca names the PEM CA certificates to trust (instead of the
// system's) and -cert/-key a client certificate to present.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func typeName(mt int) string {
	switch mt {
	case websocket.TextMessage:
		return "text"
	case websocket.BinaryMessage:
		return "binary"
	}
	return fmt.Sprintf("type %d", mt)
}

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/echo", "echo server URL")
	ca := flag.String("ca", "", "PEM CA certificates to trust for wss:// (default: the system's)")
	cert := flag.String("cert", "", "PEM client certificate to present (needs -key)")
	key := flag.String("key", "", "PEM private key for -cert")
	flag.Parse()

	deadline := time.Now().Add(20 * time.Second)
	time.AfterFunc(time.Until(deadline), func() { fail("overall 20 s deadline exceeded") })

	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{}}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fail("read -ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("no certificate in %s", *ca)
		}
		dialer.TLSClientConfig.RootCAs = pool
	}
	if *cert != "" || *key != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fail("load -cert/-key: %v", err)
		}
		dialer.TLSClientConfig.Certificates = []tls.Certificate{pair}
	}
	c, resp, err := dialer.Dial(*url, nil)
	if err != nil {
		if resp != nil {
			fail("dial %s: %v (HTTP status %s)", *url, err, resp.Status)
		}
		fail("dial %s: %v", *url, err)
	}
	defer c.Close()
	c.SetReadDeadline(deadline)
	c.SetWriteDeadline(deadline)

	pongs := make(chan string, 4)
	c.SetPongHandler(func(data string) error { pongs <- data; return nil })

	roundTrip := func(name string, mt int, msg []byte) {
		if err := c.WriteMessage(mt, msg); err != nil {
			fail("%s: write: %v", name, err)
		}
		gotType, got, err := c.ReadMessage()
		if err != nil {
			fail("%s: read echo: %v", name, err)
		}
		if gotType != mt {
			fail("%s: echo has %s, want %s", name, typeName(gotType), typeName(mt))
		}
		if !bytes.Equal(got, msg) {
			fail("%s: echo differs: got %d bytes, want %d bytes", name, len(got), len(msg))
		}
	}

	roundTrip("text", websocket.TextMessage, []byte("hello"))
	roundTrip("unicode text", websocket.TextMessage, []byte("héllo wörld — 你好 🌍 Ωμέγα"))
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	roundTrip("binary 0..255", websocket.BinaryMessage, bin)
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>8)
	}
	roundTrip("1 MiB binary", websocket.BinaryMessage, big)

	// Ping: the pong arrives before the echo of the message sent after it.
	if err := c.WriteControl(websocket.PingMessage, []byte("ping-payload"), deadline); err != nil {
		fail("ping: write: %v", err)
	}
	roundTrip("text after ping", websocket.TextMessage, []byte("after-ping"))
	select {
	case p := <-pongs:
		if p != "ping-payload" {
			fail("ping: pong payload %q, want %q", p, "ping-payload")
		}
	default:
		fail("ping: no pong received before the next echo")
	}

	// Close handshake: we send 1000, the server must answer with 1000.
	if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye")); err != nil {
		fail("close: write: %v", err)
	}
	mt, msg, err := c.ReadMessage()
	if err == nil {
		fail("close: got %s message (%d bytes) instead of the close reply", typeName(mt), len(msg))
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		fail("close: no close reply: %v", err)
	}
	if ce.Code != 1000 {
		fail("close: server replied with code %d (%q), want 1000", ce.Code, ce.Text)
	}
	fmt.Println("ok")
}
