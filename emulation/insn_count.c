/*
 * edgepipe's QEMU TCG plugin: guest instructions executed between two markers.
 *
 * The guest marks the start and end of a region with lseek(-1, MAGIC, SEEK_SET), a system call
 * that fails harmlessly with EBADF and that nothing else issues with these arguments. For every
 * end marker the plugin appends the instructions executed since the matching start marker to
 * the file given as out=PATH. Counting is inline (one add per executed translation block), so
 * the same binary, inputs and environment give the same count on every run.
 *
 * Build: cc -O2 -fPIC -shared -I<dir with qemu-plugin.h> insn_count.c -o insn_count.so
 * Use:   qemu-aarch64 -plugin ./insn_count.so,out=counts.txt ...
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define AARCH64_SYS_LSEEK 62
#define MARK_START 0x45504950ULL /* "EPIP" */
#define MARK_STOP 0x45504951ULL

static uint64_t executed;
static uint64_t started;
static int counting;
static FILE *out;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t number, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (number != AARCH64_SYS_LSEEK || a1 != UINT64_MAX) {
        return;
    }
    if (a2 == MARK_START) {
        started = executed;
        counting = 1;
    } else if (a2 == MARK_STOP && counting) {
        fprintf(out, "%" PRIu64 "\n", executed - started);
        fflush(out);
        counting = 0;
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *data)
{
    if (out && out != stderr) {
        fclose(out);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    out = stderr;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out = fopen(argv[i] + 4, "w");
            if (!out) {
                fprintf(stderr, "insn_count: cannot open %s\n", argv[i] + 4);
                return -1;
            }
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
