// Test peers for wsecho's interop tests (see ../setup.sh). Builds offline
// against Debian's packaged gorilla/websocket (golang-github-gorilla-websocket-dev).
module wsecho/peers

go 1.19

require github.com/gorilla/websocket v1.5.0

replace github.com/gorilla/websocket => /usr/share/gocode/src/github.com/gorilla/websocket
