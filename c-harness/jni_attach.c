/* A JNI library for java-harness/NativeAttach.java: native threads that
 * attach themselves to the JVM (AttachCurrentThread), malloc in their own
 * code, call a Java method that allocates native memory (a GZIPOutputStream),
 * and detach; two at a time, many times (thread churn). Known truth: the
 * native malloc is in native_alloc, the call into Java in call_java, both
 * called from thread_main, on the lines their comments mark. The same call
 * into Java is also made from a Java thread, through a native method
 * (fromJava): there Java frames lie below the native ones. */
#include <jni.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NATIVE_BYTES (64 << 10)
#define ROUNDS_MAX 4096

static JavaVM *vm;
static jclass callback_class;
static jmethodID callback;
static void *native_kept[ROUNDS_MAX];

__attribute__((noinline)) static void *native_alloc(size_t n) {
    return malloc(n); /* NATIVE_ALLOC */
}

__attribute__((noinline)) static int call_java(JNIEnv *env, int round) {
    (*env)->CallStaticVoidMethod(env, callback_class, callback, (jint)round); /* CALL_JAVA */
    if ((*env)->ExceptionCheck(env)) {
        (*env)->ExceptionDescribe(env);
        return 1;
    }
    return 0;
}

static void *thread_main(void *arg) {
    int round = (int)(intptr_t)arg;
    JNIEnv *env;
    JavaVMAttachArgs args = {JNI_VERSION_1_6, "native attacher", NULL};
    if ((*vm)->AttachCurrentThread(vm, (void **)&env, &args) != JNI_OK) return (void *)1;
    native_kept[round] = native_alloc(NATIVE_BYTES); /* THREAD_ALLOC */
    int failed = call_java(env, round); /* THREAD_CALL */
    if ((*vm)->DetachCurrentThread(vm) != JNI_OK) failed = 1;
    return (void *)(intptr_t)failed;
}

/* From a Java thread: the same calls into Java, from a native method. */
JNIEXPORT jint JNICALL Java_NativeAttach_fromJava(JNIEnv *env, jclass class, jint rounds) {
    (void)class;
    int failed = 0;
    for (int r = 0; r < rounds; r++) failed |= call_java(env, r);
    return failed;
}

/* Runs `rounds` native threads, two at a time; returns how many succeeded. */
JNIEXPORT jint JNICALL Java_NativeAttach_run(JNIEnv *env, jclass class, jint rounds) {
    if (rounds > ROUNDS_MAX || (*env)->GetJavaVM(env, &vm) != 0) return -1;
    callback_class = (*env)->NewGlobalRef(env, class);
    callback = (*env)->GetStaticMethodID(env, class, "callback", "(I)V");
    if (!callback) return -1;
    int ok = 0;
    for (int r = 0; r < rounds; r += 2) {
        pthread_t t[2];
        int n = rounds - r < 2 ? rounds - r : 2;
        for (int i = 0; i < n; i++)
            if (pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)(r + i)) != 0) return -1;
        for (int i = 0; i < n; i++) {
            void *failed;
            pthread_join(t[i], &failed);
            ok += failed == NULL;
        }
    }
    return ok;
}
