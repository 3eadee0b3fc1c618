-- wrk script: the validated JSON POST to /v1/hello/greet (~200-byte body).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name":"Ada Lovelace","language":"en","tags":["math","engines","poetry","notes"],"repeat":3,"metadata":{"source":"benchmark","client":"wrk","suite":"http-overhead","note":"about two hundred bytes of JSON"}}'
