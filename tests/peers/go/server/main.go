// go-echo-server: an independent WebSocket echo server (gorilla/websocket),
// used as a peer by wsecho's interop tests (tests/it/interop.rs). It behaves like
// gorilla's examples/echo server: /echo upgrades and echoes every message
// back with the same message type. Any Origin is accepted (test peer only).
// With -log it also logs "client close code N" when the client's Close arrives and
// "ping" for every ping it answers (gorilla's own handler sends the pong).
// With -cert and -key (PEM) it serves over TLS (https and wss) instead, as
// gorilla's echo example would behind http.ListenAndServeTLS; -client-ca makes it
// require and verify client certificates. With -page FILE it also serves FILE at
// "/" (wsecho's test page), so a browser test can be calibrated against it.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

var (
	addr     = flag.String("addr", "127.0.0.1:8080", "http service address")
	logging  = flag.Bool("log", false, "log connections and messages")
	cert     = flag.String("cert", "", "PEM certificate chain: serve TLS (needs -key)")
	key      = flag.String("key", "", "PEM private key for -cert")
	clientCA = flag.String("client-ca", "", "PEM CA certificates: require client certificates they issued")
	page     = flag.String("page", "", "an HTML file to serve at /")
)

var upgrader = websocket.Upgrader{
	CheckOrigin: func(r *http.Request) bool { return true },
}

func echo(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		if *logging {
			log.Print("upgrade: ", err)
		}
		return
	}
	defer c.Close()
	answer := c.PingHandler()
	c.SetPingHandler(func(data string) error {
		log.Print("ping")
		return answer(data)
	})
	for {
		mt, msg, err := c.ReadMessage()
		if err != nil {
			// gorilla's default close handler already replied with the same code.
			if *logging {
				log.Print("read: ", err)
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
					log.Printf("client close code %d", ce.Code)
				}
			}
			return
		}
		if *logging {
			log.Printf("recv: type=%d len=%d", mt, len(msg))
		}
		if err := c.WriteMessage(mt, msg); err != nil {
			if *logging {
				log.Print("write: ", err)
			}
			return
		}
	}
}

func main() {
	flag.Parse()
	if !*logging {
		log.SetOutput(io.Discard)
	}
	http.HandleFunc("/echo", echo)
	if *page != "" {
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" {
				http.NotFound(w, r)
				return
			}
			http.ServeFile(w, r, *page)
		})
	}
	log.Printf("listening on %s", *addr)
	var err error
	if *cert == "" && *key == "" && *clientCA == "" {
		err = http.ListenAndServe(*addr, nil)
	} else {
		server := &http.Server{Addr: *addr, TLSConfig: &tls.Config{}}
		if *clientCA != "" {
			pem, readErr := os.ReadFile(*clientCA)
			if readErr != nil {
				fmt.Fprintln(os.Stderr, "go-echo-server:", readErr)
				os.Exit(1)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				fmt.Fprintln(os.Stderr, "go-echo-server: no certificate in", *clientCA)
				os.Exit(1)
			}
			server.TLSConfig.ClientCAs = pool
			server.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		}
		err = server.ListenAndServeTLS(*cert, *key)
	}
	fmt.Fprintln(os.Stderr, "go-echo-server:", err)
	os.Exit(1)
}
