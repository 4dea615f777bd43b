# Shared shell helpers for /init and the /harness scripts (busybox ash).

# say MSG: a protocol line on the console, always on its own line.
say() {
    echo "HARNESS: $*" > /dev/console
}

# uptime_s, cmdline_arg and param use shell builtins only: the capture kernel's first line
# calls them, and every program started under TCG costs milliseconds.
uptime_s() {
    read -r up _ < /proc/uptime
    echo "$up"
}

# cmdline_arg NAME DEFAULT: the value of NAME= on the kernel command line.
cmdline_arg() {
    read -r words < /proc/cmdline
    for word in $words; do
        case "$word" in
            "$1"=*) echo "${word#"$1"=}"; return 0 ;;
        esac
    done
    echo "$2"
}

# param NAME DEFAULT: the value of harness.NAME= on the kernel command line.
param() {
    cmdline_arg "harness.$1" "$2"
}

# module_args NAME: the NAME.PARAM=VALUE words of the kernel command line as insmod
# arguments (PARAM=VALUE), as modprobe passes them to a module that is not built in.
module_args() {
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$1".*=*) echo "${word#"$1".}" ;;
        esac
    done
}

# load_modules GROUP...: insmod every module listed (dependencies first) in each group,
# with its options from the kernel command line (module_args).
# A group file that does not exist means everything in it is built in.
load_modules() {
    for group in "$@"; do
        [ -f "/etc/harness/modules/$group" ] || continue
        while read -r ko; do
            [ -n "$ko" ] || continue
            name=$(basename "$ko" .ko | tr - _)
            grep -q "^$name " /proc/modules && continue
            # shellcheck disable=SC2046  # one insmod argument per PARAM=VALUE word
            insmod "$ko" $(module_args "$name") 2>>/run/harness/modules.log ||
                echo "insmod $ko failed" >> /run/harness/modules.log
        done < "/etc/harness/modules/$group"
    done
}

# pstore_wanted: does the kernel command line configure ramoops (pstore's RAM backend)?
pstore_wanted() {
    [ -n "$(module_args ramoops)" ]
}

# kernel_at_least MAJOR MINOR: is the running kernel at least that version?
kernel_at_least() {
    rel=$(uname -r)
    major=${rel%%.*}
    rest=${rel#*.}
    minor=${rest%%[!0-9]*}
    [ "$major" -gt "$1" ] || { [ "$major" -eq "$1" ] && [ "$minor" -ge "$2" ]; }
}
