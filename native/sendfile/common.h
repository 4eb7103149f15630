/*
 * What the addon's job kinds share (sendfile.c: transfers and receives into
 * memory; body-file.c: request bodies received into a file): the lifetime
 * macros every job with a thread, a threadsafe completion and a teardown hook
 * follows, and small helpers. A job struct used with the macros has `lock`,
 * `ended_cond`, `ended` and `tsfn` members.
 */
#ifndef FERRY_ADDON_COMMON_H
#define FERRY_ADDON_COMMON_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The thread's last touch of a job: tells a waiting teardown hook, drops its reference. */
#define THREAD_ENDED(j, unref)             \
  do {                                     \
    pthread_mutex_lock(&(j)->lock);        \
    (j)->ended = 1;                        \
    pthread_cond_broadcast(&(j)->ended_cond); \
    pthread_mutex_unlock(&(j)->lock);      \
    unref(j);                              \
  } while (0)

/*
 * A thread's end, for either job kind: queues the completion call and tells a
 * waiting teardown hook. The call's reference may be dropped as soon as it is
 * queued, so the tsfn is kept in a local. napi_closing (the environment is
 * going away, the function may be gone): only the call's reference is dropped.
 */
#define REPORT_AND_END(j, unref)                                                  \
  do {                                                                            \
    napi_threadsafe_function tsfn_ = (j)->tsfn;                                   \
    if (napi_call_threadsafe_function(tsfn_, (j), napi_tsfn_blocking) != napi_ok) \
      unref(j);                                                                   \
    else                                                                          \
      napi_release_threadsafe_function(tsfn_, napi_tsfn_release);                 \
    THREAD_ENDED(j, unref);                                                       \
  } while (0)

/* A teardown hook's wait: until the job's thread no longer touches the job, its buffer or the JS environment. */
#define WAIT_ENDED(j)                                                \
  do {                                                               \
    pthread_mutex_lock(&(j)->lock);                                  \
    while (!(j)->ended) pthread_cond_wait(&(j)->ended_cond, &(j)->lock); \
    pthread_mutex_unlock(&(j)->lock);                                \
  } while (0)

static inline int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline napi_value throw_errno(napi_env env, const char *what, int err) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, message);
  return NULL;
}

static inline int dup_cloexec(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

/* A detached thread with a small stack that never receives a signal (it inherits the full mask). 0 or an errno. */
static inline int start_thread(void *(*body)(void *), void *arg) {
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t thread;
  int err = pthread_create(&thread, &attr, body, arg);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  return err;
}

/* The job behind the handle passed as the only argument; NULL (with a TypeError thrown) for anything else. */
static inline void *handle_arg(napi_env env, napi_callback_info info, const napi_type_tag *tag, const char *usage) {
  size_t argc = 1;
  napi_value arg;
  void *data = NULL;
  napi_valuetype type;
  bool tagged = false;
  if (napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, arg, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, arg, tag, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, arg, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  return data;
}

/* Which kind of job a handle is, so a handle of one kind is refused by another's cancel. */
static const napi_type_tag TRANSFER_TAG = {0x6665727279736e64ULL, 0x0000000000000001ULL};
static const napi_type_tag RECEIVE_TAG = {0x6665727279736e64ULL, 0x0000000000000002ULL};
static const napi_type_tag BODY_FILE_TAG = {0x6665727279736e64ULL, 0x0000000000000003ULL};

/*
 * The JS handle of a job just started: an external whose finalizer drops the
 * handle's reference, tagged with the job's kind. When it cannot be made the
 * job runs and reports anyway, it just cannot be cancelled: undefined.
 */
static inline napi_value job_handle(napi_env env, void *job, napi_finalize finalize, const napi_type_tag *tag) {
  napi_value handle;
  if (napi_create_external(env, job, finalize, NULL, &handle) != napi_ok) {
    finalize(env, job, NULL);
    napi_get_undefined(env, &handle);
  } else if (napi_type_tag_object(env, handle, tag) != napi_ok) {
    napi_get_undefined(env, &handle); /* the external's finalizer still drops its reference */
  }
  return handle;
}

/* body-file.c's exports (receiveFile, cancelReceiveFile, the SHA-256 state functions). */
void register_body_file(napi_env env, napi_value exports);

#endif
