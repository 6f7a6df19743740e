# nginx (Debian's nginx-light) as a plain reverse proxy, the peer the
# gateway benchmarks measure against. Sourced by bench-gateway.sh and
# bench-class-gateway.sh.
# nginx_proxy DIR PORT UPSTREAM_PORT KEEPALIVE [LOCATION_DIRECTIVES]
# One worker, keep-alive to the upstream, access log off; its pid file and
# log go in DIR. Sets NGINX_PID to the worker's pid (the worker proxies; the
# master only supervises), or leaves it empty with a note when nginx is not
# installed. The caller stops it with `kill "$(cat DIR/nginx.pid)"`.
nginx_proxy() {
  NGINX_PID=
  if [ ! -x /usr/sbin/nginx ]; then
    echo "nginx is not installed (apt-get install nginx-light): measured without it"
    return 0
  fi
  cat > "$1/nginx.conf" <<CONF
worker_processes 1;
pid $1/nginx.pid;
error_log $1/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$3; keepalive $4; }
  server {
    listen 127.0.0.1:$2;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; ${5:-} }
  }
}
CONF
  /usr/sbin/nginx -c "$1/nginx.conf"
  for _ in $(seq 50); do [ -s "$1/nginx.pid" ] && break; sleep 0.1; done
  NGINX_PID=$(pgrep -P "$(cat "$1/nginx.pid")" | head -1)
}
