#!/usr/bin/env bash
# Writes N Kinetics-like clips for `polyflow bench-video` and benches/video_decode.py: 10 s at 25 fps,
# 340×256, H.264 (libx264, yuv420p, CRF 23), moving test patterns with noise, with the ffmpeg command.
#
#   benches/make_videos.sh DIR [N=100]
set -euo pipefail
dir=$1
n=${2:-100}
mkdir -p "$dir"
for i in $(seq 1 "$n"); do
  ffmpeg -v error -y -f lavfi -i "testsrc2=size=340x256:rate=25:duration=10,noise=alls=12:allf=t+u,hue=h=$((i * 7))" \
    -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p "$dir/clip_$(printf %05d "$i")_000000_000010.mp4"
done
