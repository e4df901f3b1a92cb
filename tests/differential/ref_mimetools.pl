#!/usr/bin/perl
# Reference parser: Perl MIME-tools (MIME::Parser), batch mode.
# Reads a JSON list of message paths on stdin, prints JSON {path: [sha256 of every leaf body]}
# (each also as "n:" + the sha256 of its line-end-normalised text, for comparing real mail).
use strict;
use warnings;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use MIME::Parser;

my $paths = do { local $/; decode_json(<STDIN>) };
my %result;
for my $path (@$paths) {
    my $parser = MIME::Parser->new;
    $parser->output_to_core(1);
    $parser->tmp_to_core(1);
    $parser->extract_nested_messages(1);
    $parser->extract_uuencode(1);
    $parser->decode_bodies(1);
    $parser->ignore_errors(1);
    my @hashes;
    my $entity = eval { $parser->parse_open($path) };
    if ($entity) {
        for my $part ($entity->parts_DFS) {
            my $body = $part->bodyhandle or next;
            my $data = eval { $body->as_string };
            next unless defined $data;
            (my $normal = $data) =~ s/\r\n/\n/g;
            $normal =~ s/[\r\n]+\z//;
            push @hashes, sha256_hex($data), "n:" . sha256_hex($normal);
        }
    } else {
        print STDERR "ref_mimetools: $path: parse failed\n";
    }
    $result{$path} = \@hashes;
}
print encode_json(\%result);
