# mcpsh exec agent: runs on an SSH host for the life of one connection and
# starts commands without a new SSH channel, login shell or sh each time.
# Hosts with Python 3.8+ run agent.py instead, which speaks the same frames.
# Frames both ways: u32 length (big-endian, of what follows), a type byte,
# a u32 job id, the payload. In: S (start: cwd, env count, env pairs, argv
# count, argv, each NUL-terminated). Out: R (ready: "1 bash perl" or
# "1 sh perl"; the last word names the agent),
# P (pid), O (output, stdout and stderr merged), X (exit: cN or sN).
# Each command runs in its own session with stdin from /dev/null; its exit
# is reported once its output ends, or 100 ms after it exits if background
# processes keep the output open. A pid waits up to 3 ms for the command's
# first output or exit, and the frames of one turn of the loop leave in one
# write: a short command costs the connection one message, not two. EOF on
# stdin (the connection is gone) ends the agent, not the commands.
use strict; use warnings;
use POSIX ();
use Time::HiRes ();
$SIG{PIPE} = 'IGNORE';
binmode STDIN; binmode STDOUT;
pipe(my $sr, my $sw) or exit 1;
for my $fh ($sr, $sw) { my $f = fcntl($fh, 3, 0); fcntl($fh, 4, $f | 04000); }
$SIG{CHLD} = sub { syswrite($sw, 'c') };
my (%job, %bypid, $in, $out);
$in = ''; $out = '';
sub put {
  my ($t, $id, $p) = @_;
  if ($t ne 'P' && $job{$id} && defined $job{$id}{pp}) { delete $job{$id}{pp}; put('P', $id, $job{$id}{pid}) }
  $out .= pack('NaN', 5 + length($p), $t, $id) . $p;
}
sub flush {
  while (length $out) {
    my $n = syswrite(STDOUT, $out);
    if (!defined $n) { next if $!{EINTR} || $!{EAGAIN}; exit 0 }
    substr($out, 0, $n, '');
  }
}
my $sh = (grep { -x "$_/bash" } split /:/, ($ENV{PATH} // '')) ? 'bash' : 'sh';
put('R', 0, "1 $sh perl"); flush();
sub start {
  my ($id, $p) = @_;
  my @f = split /\0/, $p, -1;
  pop @f;
  my $cwd = shift @f;
  my $ne = shift @f;
  my @env = splice @f, 0, 2 * $ne;
  my $na = shift @f;
  my @argv = splice @f, 0, $na;
  my ($r, $w);
  if (!pipe($r, $w)) { put('O', $id, "mcpsh agent: pipe: $!\n"); put('X', $id, 'c127'); return }
  my $pid = fork;
  if (!defined $pid) { put('O', $id, "mcpsh agent: fork: $!\n"); put('X', $id, 'c127'); close $r; close $w; return }
  if ($pid == 0) {
    $SIG{CHLD} = 'DEFAULT'; $SIG{PIPE} = 'DEFAULT';
    POSIX::setsid();
    open(STDIN, '<', '/dev/null');
    open(STDOUT, '>&', $w); open(STDERR, '>&', $w);
    if (length $cwd && !chdir $cwd) { print STDERR "cd: $cwd: $!\n"; POSIX::_exit(126) }
    while (@env) { my $k = shift @env; $ENV{$k} = shift @env }
    { no warnings; exec { $argv[0] } @argv; }
    print STDERR "$argv[0]: $!\n";
    POSIX::_exit(127);
  }
  close $w;
  my $fl = fcntl($r, 3, 0); fcntl($r, 4, $fl | 04000);
  $job{$id} = { pid => $pid, fh => $r, open => 1, pp => Time::HiRes::time() + 0.003 };
  $bypid{$pid} = $id;
}
while (1) {
  my $rin = '';
  vec($rin, fileno(STDIN), 1) = 1;
  vec($rin, fileno($sr), 1) = 1;
  # Waits are short while a command lingers (exited, output still open) or
  # has closed its output but is not reaped yet; with commands running,
  # children are looked for at least once a second whatever the signals do.
  my $wait = %job ? 1 : undef;
  my $now = Time::HiRes::time();
  for my $j (values %job) {
    vec($rin, fileno($j->{fh}), 1) = 1 if $j->{open};
    $wait = 0.02 if (defined $j->{st} || !$j->{open}) && $wait > 0.02;
    if (defined $j->{pp}) { my $d = $j->{pp} - $now; $d = 0 if $d < 0; $wait = $d if $d < $wait }
  }
  my $n = select(my $rout = $rin, undef, undef, $wait);
  if ($n < 0) { next if $!{EINTR}; exit 1 }
  if ($n > 0 && vec($rout, fileno(STDIN), 1)) {
    my $got = sysread(STDIN, $in, 65536, length $in);
    if (!$got) { next if !defined $got && $!{EINTR}; exit 0 }
    while (length($in) >= 4) {
      my $len = unpack('N', $in);
      last if length($in) < 4 + $len;
      my ($t, $id) = unpack('aN', substr($in, 4, 5));
      my $p = substr($in, 9, $len - 5);
      substr($in, 0, 4 + $len, '');
      start($id, $p) if $t eq 'S';
    }
  }
  sysread($sr, my $x, 512) if $n > 0 && vec($rout, fileno($sr), 1);
  while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
    my $id = delete $bypid{$pid};
    next unless defined $id && $job{$id};
    my $s = $?;
    $job{$id}{st} = ($s & 127) ? 's' . ($s & 127) : 'c' . ($s >> 8);
    $job{$id}{at} = Time::HiRes::time();
  }
  for my $id (keys %job) {
    my $j = $job{$id};
    if ($j->{open} && $n > 0 && vec($rout, fileno($j->{fh}), 1)) {
      my $got = sysread($j->{fh}, my $d, 65536);
      if ($got) { put('O', $id, $d) }
      elsif (defined $got || !($!{EAGAIN} || $!{EINTR})) { close $j->{fh}; $j->{open} = 0 }
    }
    if (defined $j->{st} && (!$j->{open} || Time::HiRes::time() - $j->{at} > 0.1)) {
      if ($j->{open}) {
        while (1) { my $got = sysread($j->{fh}, my $d, 65536); last unless $got; put('O', $id, $d) }
        close $j->{fh};
      }
      put('X', $id, $j->{st});
      delete $job{$id};
      next;
    }
    if (defined $j->{pp} && Time::HiRes::time() >= $j->{pp}) { delete $j->{pp}; put('P', $id, $j->{pid}) }
  }
  flush();
}
