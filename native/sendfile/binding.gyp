{
  "targets": [
    {
      "target_name": "ferry_sendfile",
      "sources": ["sendfile.c", "body-file.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
