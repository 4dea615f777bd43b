# Shared shell helpers for /init and the /harness scripts (busybox ash).

# say MSG: a protocol line on the console, always on its own line.
say() {
    echo "HARNESS: $*" > /dev/console
}

# get_uptime and get_arg set a variable with shell builtins only: the capture kernel's
# first line calls them, and every fork (a command substitution too) or program started
# under TCG costs milliseconds.  uptime_s and cmdline_arg print the same, for $(...).
get_uptime() {
    read -r up _ < /proc/uptime
}

uptime_s() {
    get_uptime
    echo "$up"
}

# get_arg NAME DEFAULT: set $arg to the value of NAME= on the kernel command line.
get_arg() {
    arg=$2
    read -r words < /proc/cmdline
    for word in $words; do
        case "$word" in
            "$1"=*) arg=${word#"$1"=}; return 0 ;;
        esac
    done
}

# cmdline_arg NAME DEFAULT: print the value of NAME= on the kernel command line.
cmdline_arg() {
    get_arg "$1" "$2"
    echo "$arg"
}

# param NAME DEFAULT: the value of harness.NAME= on the kernel command line.
param() {
    cmdline_arg "harness.$1" "$2"
}

# module_args NAME: set $margs to the NAME.PARAM=VALUE words of the kernel command line as
# insmod arguments (PARAM=VALUE), as modprobe passes them to a module that is not built in.
# Like everything the capture kernel runs before its dump is written, builtins only: a
# command substitution forks, a program forks and execs, each milliseconds under TCG.
module_args() {
    margs=
    read -r words < /proc/cmdline
    for word in $words; do
        case "$word" in
            "$1".*=*) margs="$margs ${word#"$1".}" ;;
        esac
    done
}

# module_loaded NAME: is NAME in /proc/modules?
module_loaded() {
    while read -r loaded _; do
        [ "$loaded" = "$1" ] && return 0
    done < /proc/modules
    return 1
}

# load_modules GROUP...: insmod every module listed (dependencies first) in each group,
# with its options from the kernel command line (module_args).
# A group file that does not exist means everything in it is built in.
load_modules() {
    for group in "$@"; do
        [ -f "/etc/harness/modules/$group" ] || continue
        while read -r ko; do
            [ -n "$ko" ] || continue
            name=${ko##*/}
            name=${name%.ko}
            case "$name" in
                *-*) name=$(echo "$name" | tr - _) ;;   # /proc/modules says '_'
            esac
            module_loaded "$name" && continue
            module_args "$name"
            # shellcheck disable=SC2086  # one insmod argument per PARAM=VALUE word
            insmod "$ko" $margs 2>>/run/harness/modules.log ||
                echo "insmod $ko failed" >> /run/harness/modules.log
        done < "/etc/harness/modules/$group"
    done
}

# pstore_wanted: does the kernel command line configure ramoops (pstore's RAM backend)?
pstore_wanted() {
    module_args ramoops
    [ -n "$margs" ]
}

# kernel_at_least MAJOR MINOR: is the running kernel at least that version?
kernel_at_least() {
    rel=$(uname -r)
    major=${rel%%.*}
    rest=${rel#*.}
    minor=${rest%%[!0-9]*}
    [ "$major" -gt "$1" ] || { [ "$major" -eq "$1" ] && [ "$minor" -ge "$2" ]; }
}
