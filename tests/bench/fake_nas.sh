# shellcheck shell=bash
# The bench's "fake NAS": nginx answering DSM calls with the bodies in tests/bench/data/ (a
# 50-post, 16 KB Post.list; a Post.create answer; a 20-channel list; login and API.Info),
# whether the parameters come in the query or in a POST form. Any login succeeds. Sourced by
# proxy_overhead.sh and instructions.sh.
#
#   start_fake_nas DIR NAS_PORT FORM_PORT [CPU]   sets FAKE_NAS_PID (the nginx master)
#
# GETs pick the body from the query's api and method; a POST is passed to a second server with
# its form in a header (nginx has no other way to look into a body), which picks the body from
# that.
start_fake_nas() {
  local dir=$1 nas_port=$2 form_port=$3 cpu=${4:-} data
  data="$(cd "$(dirname "${BASH_SOURCE[0]}")/data" && pwd)"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
daemon off; worker_processes 1; pid nginx.pid; error_log error.log warn;
events { worker_connections 4096; }
http {
  access_log off; types { } default_type application/json;
  client_body_temp_path cb; proxy_temp_path pt; fastcgi_temp_path ft; uwsgi_temp_path ut; scgi_temp_path st;
  map "\$arg_api:\$arg_method" \$query_body {
    default default.json;
    "SYNO.API.Info:query" api_info.json; "SYNO.API.Auth:login" auth_login.json;
    "SYNO.Chat.Post:list" post_list.json; "SYNO.Chat.Post:create" post_create.json;
    "SYNO.Chat.Channel:list" channel_list.json; "SYNO.Chat.User:list" user_list.json;
  }
  map \$http_x_form \$form_body {
    default default.json;
    "~(^|&)api=SYNO\.API\.Auth&(.*&)?method=login(&|\$)" auth_login.json;
    "~(^|&)api=SYNO\.Chat\.Post&(.*&)?method=create(&|\$)" post_create.json;
    "~(^|&)api=SYNO\.Chat\.Post&(.*&)?method=list(&|\$)" post_list.json;
    "~(^|&)api=SYNO\.Chat\.Channel&(.*&)?method=list(&|\$)" channel_list.json;
  }
  upstream form { server 127.0.0.1:$form_port; keepalive 64; }
  server { listen 127.0.0.1:$nas_port backlog=4096; root $data;
    location /webapi/ { if (\$request_method = POST) { rewrite ^ /form last; } try_files /\$query_body =404; }
    location = /form { internal; client_body_buffer_size 64k; proxy_pass http://form;
      proxy_http_version 1.1; proxy_set_header Connection ""; proxy_method GET;
      proxy_pass_request_body off; proxy_set_header Content-Length ""; proxy_set_header X-Form \$request_body; } }
  server { listen 127.0.0.1:$form_port; root $data; location / { try_files /\$form_body =404; } }
}
CONF
  if [ -n "$cpu" ]; then
    taskset -c "$cpu" nginx -p "$dir" -c "$dir/nginx.conf" -e stderr 2>"$dir/stderr" &
  else
    nginx -p "$dir" -c "$dir/nginx.conf" -e stderr 2>"$dir/stderr" &
  fi
  # shellcheck disable=SC2034  # read by the scripts that source this file
  FAKE_NAS_PID=$!
}
